package gerrit

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The control API: plain JSON (no XSSI prefix), no authentication, one
// POST endpoint per Go method plus a few GETs. Errors are JSON
// {"error": "..."} with 400 (ErrInvalid or a bad body), 404 (ErrNotFound),
// 409 (ErrConflict) or 405.
//
//	POST   /control/create_branch    {"project","branch","commit":CommitSpec}  -> {"revision"}
//	POST   /control/move_branch      {"project","branch","commit":CommitSpec}  -> {"revision"}
//	GET    /control/branch_head?project=P&branch=B                             -> {"revision"}
//	POST   /control/create_change    ChangeSpec                                -> PatchSet
//	POST   /control/upload_patchset  {"change", ...PatchSetSpec}               -> PatchSet
//	POST   /control/set_vote         {"change","email","label","value"}        -> {}
//	POST   /control/abandon          {"change","email","message"}              -> {}
//	POST   /control/restore          {"change","email"}                        -> {}
//	POST   /control/merge            {"change","email"}                        -> {"revision"}
//	POST   /control/set_wip          {"change","wip"}                          -> {}
//	POST   /control/account          {"email","name"}                          -> AccountInfo
//	GET    /control/change?change=N&o=OPTION...                                -> ChangeInfo
//	GET    /control/reviews[?change=N]                                         -> [Review]
//	POST   /control/faults           {"path_prefix","method","status","delay_ms","drop","count","duration_ms"} -> {"id"}
//	DELETE /control/faults[?id=N]                                              -> {}
//	GET    /control/requests                                                   -> {endpoint: count}
//	DELETE /control/requests                                                   -> {}
//
// CommitSpec, ChangeSpec and PatchSetSpec take the commit's files as
// "files": {"path": "content"} and "delete": ["path"] (see CommitSpec).

type controlHandler func(s *Server, r *http.Request) (any, error)

type branchReq struct {
	Project string     `json:"project"`
	Branch  string     `json:"branch"`
	Commit  CommitSpec `json:"commit"`
}

type changeReq struct {
	Change  int    `json:"change"`
	Email   string `json:"email,omitempty"`
	Label   string `json:"label,omitempty"`
	Value   int    `json:"value,omitempty"`
	Message string `json:"message,omitempty"`
	WIP     bool   `json:"wip,omitempty"`
}

type uploadReq struct {
	Change int `json:"change"`
	PatchSetSpec
}

type faultReq struct {
	PathPrefix string `json:"path_prefix"`
	Method     string `json:"method"`
	Status     int    `json:"status"`
	DelayMS    int64  `json:"delay_ms"`
	Drop       bool   `json:"drop"`
	Count      int    `json:"count"`
	DurationMS int64  `json:"duration_ms"`
}

type revisionResp struct {
	Revision string `json:"revision"`
}

type empty struct{}

func decode(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errors.Join(ErrInvalid, err)
	}
	return nil
}

var controlRoutes = map[string]map[string]controlHandler{
	"create_branch": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in branchReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		rev, err := s.CreateBranch(in.Project, in.Branch, in.Commit)
		return revisionResp{rev}, err
	}},
	"move_branch": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in branchReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		rev, err := s.MoveBranch(in.Project, in.Branch, in.Commit)
		return revisionResp{rev}, err
	}},
	"branch_head": {http.MethodGet: func(s *Server, r *http.Request) (any, error) {
		q := r.URL.Query()
		rev, err := s.BranchHead(q.Get("project"), q.Get("branch"))
		return revisionResp{rev}, err
	}},
	"create_change": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in ChangeSpec
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		return s.CreateChange(in)
	}},
	"upload_patchset": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in uploadReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		return s.UploadPatchset(in.Change, in.PatchSetSpec)
	}},
	"set_vote": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in changeReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		return empty{}, s.SetVote(in.Change, in.Email, in.Label, in.Value)
	}},
	"abandon": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in changeReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		return empty{}, s.Abandon(in.Change, in.Email, in.Message)
	}},
	"restore": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in changeReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		return empty{}, s.Restore(in.Change, in.Email)
	}},
	"merge": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in changeReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		rev, err := s.Merge(in.Change, in.Email)
		return revisionResp{rev}, err
	}},
	"set_wip": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in changeReq
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		return empty{}, s.SetWorkInProgress(in.Change, in.WIP)
	}},
	"account": {http.MethodPost: func(s *Server, r *http.Request) (any, error) {
		var in struct {
			Email string `json:"email"`
			Name  string `json:"name"`
		}
		if err := decode(r, &in); err != nil {
			return nil, err
		}
		if in.Email == "" {
			return nil, errors.Join(ErrInvalid, errors.New("email is required"))
		}
		return s.Account(in.Email, in.Name), nil
	}},
	"change": {http.MethodGet: func(s *Server, r *http.Request) (any, error) {
		q := r.URL.Query()
		n, err := strconv.Atoi(q.Get("change"))
		if err != nil {
			return nil, errors.Join(ErrInvalid, errors.New("change must be a number"))
		}
		return s.Change(n, q["o"]...)
	}},
	"reviews": {http.MethodGet: func(s *Server, r *http.Request) (any, error) {
		v := r.URL.Query().Get("change")
		if v == "" {
			return s.AllReviews(), nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, errors.Join(ErrInvalid, errors.New("change must be a number"))
		}
		rs := s.Reviews(n)
		if rs == nil {
			rs = []Review{}
		}
		return rs, nil
	}},
	"faults": {
		http.MethodPost: func(s *Server, r *http.Request) (any, error) {
			var in faultReq
			if err := decode(r, &in); err != nil {
				return nil, err
			}
			id, err := s.InjectFault(Fault{
				PathPrefix: in.PathPrefix, Method: in.Method, Status: in.Status,
				Delay: time.Duration(in.DelayMS) * time.Millisecond, Drop: in.Drop, Count: in.Count,
				Duration: time.Duration(in.DurationMS) * time.Millisecond,
			})
			return map[string]int{"id": id}, err
		},
		http.MethodDelete: func(s *Server, r *http.Request) (any, error) {
			if v := r.URL.Query().Get("id"); v != "" {
				id, err := strconv.Atoi(v)
				if err != nil {
					return nil, errors.Join(ErrInvalid, errors.New("id must be a number"))
				}
				s.RemoveFault(id)
				return empty{}, nil
			}
			s.ClearFaults()
			return empty{}, nil
		},
	},
	"requests": {
		http.MethodGet: func(s *Server, r *http.Request) (any, error) { return s.RequestCounts(), nil },
		http.MethodDelete: func(s *Server, r *http.Request) (any, error) {
			s.ResetRequestCounts()
			return empty{}, nil
		},
	},
}

func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	name := strings.Trim(strings.TrimPrefix(r.URL.Path, "/control"), "/")
	methods, ok := controlRoutes[name]
	if !ok {
		controlJSON(w, http.StatusNotFound, map[string]string{"error": "unknown control endpoint " + r.URL.Path})
		return
	}
	h, ok := methods[r.Method]
	if !ok {
		controlJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
		return
	}
	out, err := h(s, r)
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrInvalid):
			status = http.StatusBadRequest
		case errors.Is(err, ErrNotFound):
			status = http.StatusNotFound
		case errors.Is(err, ErrConflict):
			status = http.StatusConflict
		}
		controlJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	controlJSON(w, http.StatusOK, out)
}

func controlJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
