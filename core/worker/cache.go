package worker

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/sandbox"
)

// cacheProxy serves the worker's cache to one job, on 127.0.0.1 behind a
// random token in the URL path (TOLLGATE_CACHE_URL), in the cache's HTTP
// protocol: the job reaches the cache without ever holding the worker's
// own credentials, and loses it when it ends. A token in the path, not a
// header, lets a job use plain curl (or `tollgate cache`).
// cachePort is the cache's port on a sandboxed job's loopback.
const cachePort = 48101

type cacheProxy struct {
	srv *http.Server
	url string
}

func startCacheProxy(sbj *sandbox.Job, a cache.Access, log *slog.Logger) (*cacheProxy, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(b[:])
	ln, addr, err := sbj.Listen(cachePort)
	if err != nil {
		return nil, err
	}
	inner := http.StripPrefix("/"+token, cache.NewHandler(a, log))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			cache.WriteError(w, http.StatusForbidden, errs.PermissionDenied.String(), "wrong or missing job token in the URL")
			return
		}
		inner.ServeHTTP(w, r)
	})
	p := &cacheProxy{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		url: "http://" + addr + "/" + token,
	}
	go p.srv.Serve(ln)
	return p, nil
}

// close stops the proxy and cuts the calls in flight: the job is over.
func (p *cacheProxy) close() { p.srv.Close() }
