package gerrit

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Clock tells the time. The fake stamps every created, updated, vote and
// message time with it, and measures fault durations with it. It has the
// same method set as core/clock.Clock, so clock.Fake works here.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now().UTC() }

// DefaultMaxMessageLength is Gerrit's default change.commentSizeLimit
// (16 KiB), which also bounds review messages.
const DefaultMaxMessageLength = 16 << 10

// DefaultQueryLimit is the default and maximum page size of a change query,
// like Gerrit's default queryLimit capability (500).
const DefaultQueryLimit = 500

// DefaultEmailDomain is the domain of the e-mail of an account created for
// an HTTP user whose name is not an e-mail address.
const DefaultEmailDomain = "example.com"

// Options configure a Server. The zero value is usable: no HTTP users (so
// every /a/ request is answered 401), the real clock, Gerrit's default
// limits and DefaultLabels.
type Options struct {
	// Users maps HTTP user name to HTTP password. Requests under /a/ must
	// carry matching HTTP basic credentials. Each user gets an account at
	// New: its e-mail is the user name if that contains "@", otherwise
	// name@DefaultEmailDomain.
	Users map[string]string
	// User and Password add one more entry to Users.
	User, Password string
	// Clock defaults to the system clock (UTC).
	Clock Clock
	// MaxMessageLength bounds a review message, in characters. Default
	// DefaultMaxMessageLength.
	MaxMessageLength int
	// QueryLimit is the default and maximum page size. Default
	// DefaultQueryLimit.
	QueryLimit int
	// Labels are the labels of every project. Default DefaultLabels().
	Labels []LabelType
	// FirstChangeNumber is the number of the first change. Default 1.
	FirstChangeNumber int
	// GitDir is the directory holding one bare git repository per project
	// ("demo/hello" lives in GitDir/demo/hello.git), created if missing.
	// The fake owns what it creates there: a project's repository left
	// by an earlier run is replaced when the project is created again, and
	// nothing is removed on Close. Default: a temporary directory, created
	// on first use (the first CreateBranch) and removed by Close (or when
	// the Server is garbage collected without Close).
	GitDir string
}

// LabelType configures one label.
type LabelType struct {
	Name string
	// Min and Max bound the values (Min <= 0 <= Max). Every account may
	// vote the whole range; the fake models no per-group permissions.
	Min, Max int
	// Values describes each value (shown with o=DETAILED_LABELS); missing
	// descriptions get a generic text.
	Values map[int]string
	// AllowPostSubmit lets votes be raised after the change merged, as
	// Gerrit's label.allowPostSubmit (true for Code-Review by default).
	AllowPostSubmit bool
	// CopyOnKinds lists the patch set kinds (REWORK, TRIVIAL_REBASE,
	// NO_CODE_CHANGE, NO_CHANGE, ...) on whose upload the votes of the
	// previous patch set are copied to the new one: a simplified
	// copyCondition ("changekind:X OR ...").
	CopyOnKinds []string
}

// DefaultLabels returns Code-Review (-2..+2, copied on trivial rebases and
// no-change uploads, allowed after submit), Verified (-1..+1) and
// Presubmit-Ready (0..+1).
func DefaultLabels() []LabelType {
	return []LabelType{
		{
			Name: "Code-Review", Min: -2, Max: 2,
			Values: map[int]string{
				-2: "This shall not be submitted",
				-1: "I would prefer this is not submitted as is",
				0:  "No score",
				1:  "Looks good to me, but someone else must approve",
				2:  "Looks good to me, approved",
			},
			AllowPostSubmit: true,
			CopyOnKinds:     []string{KindNoChange, KindTrivialRebase},
		},
		{
			Name: "Verified", Min: -1, Max: 1,
			Values:      map[int]string{-1: "Fails", 0: "No score", 1: "Verified"},
			CopyOnKinds: []string{KindNoChange},
		},
		{
			Name: "Presubmit-Ready", Min: 0, Max: 1,
			Values:      map[int]string{0: "No score", 1: "Ready for presubmit"},
			CopyOnKinds: []string{KindNoChange},
		},
	}
}

// Patch set kinds, as in RevisionInfo.kind.
const (
	KindRework                 = "REWORK"
	KindTrivialRebase          = "TRIVIAL_REBASE"
	KindMergeFirstParentUpdate = "MERGE_FIRST_PARENT_UPDATE"
	KindNoCodeChange           = "NO_CODE_CHANGE"
	KindNoChange               = "NO_CHANGE"
)

// Change statuses, as in ChangeInfo.status.
const (
	StatusNew       = "NEW"
	StatusMerged    = "MERGED"
	StatusAbandoned = "ABANDONED"
)

// Errors returned by the control methods; test them with errors.Is. The
// control HTTP API maps them to 404, 409 and 400.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid argument")
)

// Server is a fake Gerrit. Create it with New; serve it with Handler or
// Start. All methods are safe for concurrent use.
type Server struct {
	clock       Clock
	maxMsg      int
	queryLimit  int
	labels      []LabelType
	labelByName map[string]*LabelType

	mu        sync.Mutex
	passwords map[string]string // HTTP user -> password
	userAcct  map[string]int    // HTTP user -> account id
	accounts  map[int]*account
	byEmail   map[string]int // lower-case e-mail -> account id
	nextAcct  int
	projects  map[string]*project
	changes   map[int]*change
	nextNum   int
	seq       int // monotonic counter that makes every commit and message id unique
	reviews   []Review
	faults    []*faultState
	nextFault int
	counts    map[string]int

	gitDirOpt string // Options.GitDir
	gitRoot   string // the directory in use, once created
	gitBin    string // path of the git CLI
	gitOwned  bool   // gitRoot is a temporary directory the fake removes
	gitErr    error  // set when Close removed gitRoot

	done      chan struct{}
	closeOnce sync.Once
	srv       *http.Server
}

// New returns a Server configured by opts (see Options for defaults).
func New(opts Options) *Server {
	s := &Server{
		clock:      opts.Clock,
		maxMsg:     opts.MaxMessageLength,
		queryLimit: opts.QueryLimit,
		labels:     opts.Labels,
		passwords:  map[string]string{},
		userAcct:   map[string]int{},
		accounts:   map[int]*account{},
		byEmail:    map[string]int{},
		nextAcct:   1000000,
		projects:   map[string]*project{},
		changes:    map[int]*change{},
		nextNum:    opts.FirstChangeNumber,
		counts:     map[string]int{},
		gitDirOpt:  opts.GitDir,
		done:       make(chan struct{}),
	}
	if s.clock == nil {
		s.clock = realClock{}
	}
	if s.maxMsg <= 0 {
		s.maxMsg = DefaultMaxMessageLength
	}
	if s.queryLimit <= 0 {
		s.queryLimit = DefaultQueryLimit
	}
	if s.labels == nil {
		s.labels = DefaultLabels()
	}
	if s.nextNum <= 0 {
		s.nextNum = 1
	}
	s.labelByName = map[string]*LabelType{}
	for i := range s.labels {
		s.labelByName[strings.ToLower(s.labels[i].Name)] = &s.labels[i]
	}
	for u, p := range opts.Users {
		s.passwords[u] = p
	}
	if opts.User != "" {
		s.passwords[opts.User] = opts.Password
	}
	users := make([]string, 0, len(s.passwords))
	for u := range s.passwords {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		email := u
		if !strings.Contains(u, "@") {
			email = u + "@" + DefaultEmailDomain
		}
		a := s.accountLocked(email, u)
		a.username = u
		s.userAcct[u] = a.id
	}
	return s
}

// Handler returns the HTTP handler serving the REST API and git fetches
// (anonymous paths and /a/ paths) and the control API under /control/.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Start serves Handler on addr ("" means 127.0.0.1:0, a free port) with a
// real net/http server and returns its base URL, e.g.
// "http://127.0.0.1:41234". Stop it with Close.
func (s *Server) Start(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	if s.srv != nil {
		s.mu.Unlock()
		ln.Close()
		return "", errors.New("gerrit fake: already started")
	}
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed on Close
	return "http://" + ln.Addr().String(), nil
}

// Close stops the server started by Start (if any), closing open
// connections, ends pending injected delays, and removes the temporary git
// directory (not a configured Options.GitDir). The state stays readable
// through the REST API and the methods, but operations that make commits
// then fail, and git fetches answer 500.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	var err error
	if srv != nil {
		err = srv.Close()
	}
	s.mu.Lock()
	s.closeGitLocked()
	s.mu.Unlock()
	return err
}

// sleep waits d, or less if the request or the server ends first.
func (s *Server) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-s.done:
	}
}
