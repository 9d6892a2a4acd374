package gerrit

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"strings"
)

// Git smart HTTP. Fetches (upload-pack) are served by git http-backend
// through CGI, anonymously at /PROJECT and with basic auth at /a/PROJECT
// (an optional ".git" suffix is accepted); pushes (receive-pack) answer 403.

// Endpoint names of the git requests in RequestCounts.
const (
	EndpointGitInfoRefs    = "GET /{project}/info/refs"
	EndpointGitUploadPack  = "POST /{project}/git-upload-pack"
	EndpointGitReceivePack = "POST /{project}/git-receive-pack"
)

// maxGitRequestBody bounds a chunked request body, which the fake buffers
// because CGI needs a length.
const maxGitRequestBody = 64 << 20

type gitRoute struct {
	project  string // project name
	service  string // "info/refs", "git-upload-pack" or "git-receive-pack"
	endpoint string
}

var gitServices = []struct{ suffix, endpoint string }{
	{"/info/refs", EndpointGitInfoRefs},
	{"/git-upload-pack", EndpointGitUploadPack},
	{"/git-receive-pack", EndpointGitReceivePack},
}

// matchGit maps a path (decoded, without the /a prefix) ending in a git
// service to an existing project: "/demo/hello/info/refs" and
// "/demo/hello.git/info/refs" are project "demo/hello".
func (s *Server) matchGit(path string) (gitRoute, bool) {
	for _, svc := range gitServices {
		prefix, ok := strings.CutSuffix(path, svc.suffix)
		if !ok || !strings.HasPrefix(prefix, "/") {
			continue
		}
		name := prefix[1:]
		s.mu.Lock()
		_, found := s.projects[name]
		if trimmed, cut := strings.CutSuffix(name, ".git"); !found && cut {
			_, found = s.projects[trimmed]
			name = trimmed
		}
		s.mu.Unlock()
		if found {
			return gitRoute{project: name, service: svc.suffix[1:], endpoint: svc.endpoint}, true
		}
	}
	return gitRoute{}, false
}

func (s *Server) serveGit(w http.ResponseWriter, r *http.Request, g gitRoute, path string, authed bool) {
	s.count(g.endpoint)
	if f, ok := s.takeFault(r.Method, path); ok && s.applyFault(w, r, f) {
		return
	}
	var caller *account
	if authed {
		if caller = s.authenticate(r); caller == nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="Gerrit Code Review"`)
			writeText(w, http.StatusUnauthorized, "Unauthorized")
			return
		}
	}
	want, _, _ := strings.Cut(g.endpoint, " ")
	if r.Method != want && !(want == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", want)
		writeText(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}
	service := r.URL.Query().Get("service")
	if g.service == "git-receive-pack" || (g.service == "info/refs" && service == "git-receive-pack") {
		writeText(w, http.StatusForbidden, "Push is not supported by the fake Gerrit")
		return
	}
	if g.service == "info/refs" && service != "git-upload-pack" {
		writeText(w, http.StatusForbidden, "Only the smart HTTP protocol is supported")
		return
	}
	s.mu.Lock()
	root, err := s.gitRootLocked()
	bin, dir := s.gitBin, ""
	if p := s.projects[g.project]; p != nil {
		dir = p.dir
	}
	env := []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}
	if err == nil {
		env = append(s.gitEnv(), env...)
	}
	s.mu.Unlock()
	if err != nil || dir == "" {
		writeText(w, http.StatusInternalServerError, "repository unavailable")
		return
	}
	if caller != nil {
		env = append(env, "REMOTE_USER="+caller.username)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + g.project + ".git/" + g.service
	r2.URL.RawPath = ""
	if r.ContentLength < 0 || len(r.TransferEncoding) > 0 {
		// CGI cannot stream a chunked body: read it whole.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxGitRequestBody+1))
		if err != nil {
			writeText(w, http.StatusBadRequest, "cannot read body")
			return
		}
		if len(body) > maxGitRequestBody {
			writeText(w, http.StatusRequestEntityTooLarge, "Request body too large")
			return
		}
		r2.Body, r2.ContentLength, r2.TransferEncoding = io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
	}
	h := &cgi.Handler{
		Path:   bin,
		Args:   []string{"http-backend"},
		Dir:    root,
		Env:    env,
		Logger: log.New(io.Discard, "", 0),
		Stderr: io.Discard,
	}
	h.ServeHTTP(w, r2)
}
