// Package firestore implements store.Store on Cloud Firestore (native mode),
// the production backend of Tollgate on Google Cloud.
//
// # Data model
//
// Every record lives at a deterministic document id, so a create is a
// Create (AlreadyExists on a duplicate delivery) and a read is a Get, never
// a query:
//
//	patchsets/{cl}-{ps}                    id, change, owner, time_queued, ended, data
//	jobs/{h}-{job id}                      id, src, state, worker, time_queued, time_started, time_ended,
//	                                       pool, priority, order, data
//	postsubmits/{id}                       id, branch, time_queued, data
//	workers/{id}                           id, state, last_seen, data
//	logs/{h}-{job id}                      job_id, size, expire_at
//	logs/{h}-{job id}/chunks/{offset:020}  off, data (bytes), expire_at
//	leases/{name}                          id (the name), holder, expires
//	meta/{key}                             value
//	samples/{series}@{t as Unix nanos}     name, t, value
//
// data is the whole record as JSON, the single source of truth (as in the
// sqlite adapter): it round-trips every field exactly, nanosecond times
// included. The other fields copy what queries filter and sort on and make
// the documents readable in the console. Indexed times are stored truncated
// to the microsecond (Firestore's precision), so listings order by
// (time_queued at microsecond precision, id), cursors carry that key, and
// time filters (StartedBefore, seenBefore, expiry) compare at microseconds.
// A time that is unset is null in its indexed field (time_started of a job
// that never started), so range filters skip it. A job document written
// before jobs had pool, priority and order (the claim order) lacks them, so
// ClaimJob cannot see it until an update rewrites its fields; if it stays
// queued, the controller's queue expiry ends it.
//
// Job ids start with their creation time, so as document ids they would
// grow monotonically and put every write of a busy period on one tablet
// (Firestore's hotspotting on sequential ids). Job and log documents are
// therefore keyed "{h}-{job id}" where h is the first 4 hex digits of the
// SHA-256 of the id: writes spread over 65,536 key ranges, the id stays
// readable, and the document id is still computed from the job id alone.
// The real id is in the id field. Patchset ids ("{cl}-{ps}") and postsubmit
// ids (branch first) are not time-ordered at the front and see a few writes
// a minute, so they keep their ids. Ids that contain '/' or '%', or are
// reserved in Firestore ("." "..", "__x__"), are escaped (see docID). The
// time_queued index still receives increasing values; Firestore's soft
// limit for that is 500 writes/s per collection, far above CI rates.
//
// # Concurrency
//
// Read-modify-write methods (UpdateJob, UpdatePatchset, ClaimJob,
// PutWorker, SetWorkerQuarantined, AcquireLease, AppendLog) read the
// document, call the model's Apply, and write it back with a precondition
// on the update time they read (or "must not exist" for a create). A lost
// race fails the precondition on the server; the method reads again and
// retries with jittered backoff, so Apply always judges the latest record,
// and returns errs.Aborted only after Options.MaxAttempts lost races. No
// lock-holding transaction is used: the emulator resolves lock contention
// with multi-second lock timeouts, and production Firestore in pessimistic
// mode would serialise claimers on locks instead of letting losers move on.
//
// The client library retries a Commit that failed with UNAVAILABLE. Should
// the first try have been applied after all, the retry fails its
// precondition and the method reports a lost race (FailedPrecondition from
// Apply, or a lost claim) for a write that landed. The callers tolerate
// this as they tolerate a crash after a write: a worker's heartbeat
// releases STARTED jobs it does not run, and a vote claim expires.
//
// # Round trips
//
// Creates are one Commit of every document (a WriteBatch: one RPC, atomic).
// GetJobs and GetPatchsets are one BatchGetDocuments per 300 ids, run
// concurrently. GetPatchsetWithJobs is two round trips: the patchset, then
// one batch get of its jobs. Updates are a Get and a Commit; a claim is a
// query of the head of the queue and a Commit.
//
// # Indexes and TTL
//
// Production Firestore refuses queries without their composite index (the
// emulator does not), so Indexes lists every composite index the queries
// need, derived from the same query table the code runs, and FieldOverrides
// lists the TTL policies (logs and their chunks expire on expire_at) and the
// fields to exempt from indexing. See schema.go.
package firestore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	fs "cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/store"
)

const (
	// defaultMaxAttempts bounds the retries of a read-modify-write that keeps
	// losing races; with the backoff below it spans several seconds.
	defaultMaxAttempts = 20
	// backoffBase and backoffCap shape the full-jitter backoff between
	// attempts: a random pause in [0, min(cap, base·2^attempt)).
	backoffBase = 4 * time.Millisecond
	backoffCap  = 250 * time.Millisecond
	// claimRounds is how many queue reads one ClaimJob makes, per attempt
	// allowed, before it gives up with Aborted; claimPauseCap bounds the
	// pause between them. A round is lost only when other claimers took
	// every candidate, which is progress, so a claimer that keeps losing is
	// behind a crowd draining a long queue: it should keep trying soon
	// rather than back off for long and fall further behind.
	claimRounds   = 5
	claimPauseCap = 32 * time.Millisecond
	// maxWrites is the most documents one create commits. Firestore used to
	// limit a commit to 500 writes; the limit was lifted in 2023, but the 10
	// MiB request limit remains, and 500 keeps a create far below it.
	maxWrites = 500
	// getAllBatch is how many documents one BatchGetDocuments asks for, and
	// getAllParallel how many of those run at once.
	getAllBatch    = 300
	getAllParallel = 8
)

// Options configure a Store.
type Options struct {
	// Project is the Google Cloud project id (required).
	Project string
	// Prefix is prepended to every collection id, so several deployments
	// (or test stores) can share one database. Indexes and FieldOverrides
	// name unprefixed collections.
	Prefix string
	// EmulatorHost connects to a Firestore emulator at host:port. Empty
	// means the client library's default: FIRESTORE_EMULATOR_HOST when set,
	// production Firestore otherwise.
	EmulatorHost string
	// DialOptions are added to the gRPC connection, in production and with
	// the emulator alike (for example interceptors that count RPCs).
	DialOptions []grpc.DialOption
	// ClientOptions are passed to firestore.NewClient.
	ClientOptions []option.ClientOption
	// MaxAttempts bounds the attempts of a read-modify-write under
	// contention (default 20), and ClaimJob's queue reads (five times as
	// many); then the method returns errs.Aborted.
	MaxAttempts int
}

// Store is a store.Store on Firestore. It is safe for concurrent use, and
// any number of Stores (in any number of processes) may share a database.
type Store struct {
	c           *fs.Client
	conn        *grpc.ClientConn // ours to close, when we dialled the emulator
	prefix      string
	maxAttempts int

	// observe, if set, sees the shape of every query before it runs, so a
	// test can check that Indexes covers them all.
	observe func(spec)
}

var _ store.Store = (*Store)(nil)

// Open connects to the default database of project, with the client
// library's defaults (FIRESTORE_EMULATOR_HOST selects the emulator).
func Open(ctx context.Context, project string, opts ...option.ClientOption) (*Store, error) {
	return OpenWith(ctx, Options{Project: project, ClientOptions: opts})
}

// OpenWith connects as o says.
func OpenWith(ctx context.Context, o Options) (*Store, error) {
	const op = "firestore.Open"
	if o.Project == "" {
		return nil, errs.E(errs.InvalidArgument, op, "no project")
	}
	if strings.ContainsAny(o.Prefix, "/") {
		return nil, errs.E(errs.InvalidArgument, op, "collection prefix %q contains '/'", o.Prefix)
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	s := &Store{prefix: o.Prefix, maxAttempts: o.MaxAttempts}
	copts := append([]option.ClientOption(nil), o.ClientOptions...)
	host := o.EmulatorHost
	if host == "" && len(o.DialOptions) > 0 {
		// The library dials the emulator itself and ignores dial options,
		// so dial it here when options must apply.
		host = os.Getenv("FIRESTORE_EMULATOR_HOST")
	}
	if host != "" {
		dopts := append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(emulatorCreds{}),
		}, o.DialOptions...)
		conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(host, "http://"), dopts...)
		if err != nil {
			return nil, errs.Wrap(errs.InvalidArgument, op, err)
		}
		s.conn = conn
		copts = append(copts, option.WithGRPCConn(conn))
	} else {
		for _, d := range o.DialOptions {
			copts = append(copts, option.WithGRPCDialOption(d))
		}
	}
	c, err := fs.NewClient(ctx, o.Project, copts...)
	if err != nil {
		if s.conn != nil {
			s.conn.Close()
		}
		return nil, wrap(op, err)
	}
	s.c = c
	return s, nil
}

// emulatorCreds authenticates to the emulator as the owner, bypassing
// security rules, as the client library does for FIRESTORE_EMULATOR_HOST.
type emulatorCreds struct{}

func (emulatorCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (emulatorCreds) RequireTransportSecurity() bool { return false }

// Client returns the underlying Firestore client.
func (s *Store) Client() *fs.Client { return s.c }

// Close closes the client and its connection.
func (s *Store) Close() error {
	err := s.c.Close()
	if s.conn != nil {
		// Closing the client closes a connection passed to it too; a second
		// close only reports that, which is not a failure.
		if cerr := s.conn.Close(); err == nil && cerr != nil && status.Code(cerr) != codes.Canceled {
			err = cerr
		}
	}
	return wrap("firestore.Close", err)
}

// batch returns a WriteBatch: several writes in one Commit RPC, applied
// atomically. WriteBatch is deprecated in favour of transactions, but a
// transaction costs a BeginTransaction round trip more for the same Commit,
// and BulkWriter is not atomic.
func (s *Store) batch() *fs.WriteBatch {
	//lint:ignore SA1019 see above
	return s.c.Batch()
}

// col returns the collection of name, with the store's prefix.
func (s *Store) col(name string) *fs.CollectionRef { return s.c.Collection(s.prefix + name) }

// --- errors

// wrap gives err the op and a code. This is the one place gRPC statuses
// from Firestore become errs codes; errors that already carry a code keep it.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return errs.Wrap(codeOf(err), op, err)
}

func codeOf(err error) errs.Code {
	if c := errs.CodeOf(err); c != errs.Unknown { // includes context errors
		return c
	}
	st, ok := status.FromError(err)
	if !ok {
		return errs.Unknown
	}
	switch st.Code() {
	case codes.NotFound:
		return errs.NotFound
	case codes.AlreadyExists:
		return errs.AlreadyExists
	case codes.FailedPrecondition:
		// A commit's failed precondition is a lost race, handled (and
		// reported as Aborted) by the retry loops; what reaches here is a
		// query refused for a missing index or similar.
		return errs.FailedPrecondition
	case codes.Aborted:
		return errs.Aborted
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Internal:
		// Firestore documents INTERNAL as retryable, like UNAVAILABLE.
		return errs.Unavailable
	case codes.InvalidArgument, codes.OutOfRange:
		return errs.InvalidArgument
	case codes.PermissionDenied:
		return errs.PermissionDenied
	case codes.Unauthenticated:
		return errs.Unauthenticated
	case codes.ResourceExhausted:
		return errs.ResourceExhausted
	}
	return errs.Unknown
}

// errConflict marks a commit that lost a race: its precondition failed
// because another writer changed (or created, or deleted) the document
// since it was read.
var errConflict = errors.New("document changed concurrently")

// commitErr turns the status of a precondition failure of a commit into
// errConflict and leaves other errors as they are.
func commitErr(err error) error {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists, codes.NotFound:
		return fmt.Errorf("%w: %v", errConflict, err)
	}
	return err
}

// retry runs attempt until it does not lose a race (errConflict), at most
// maxAttempts times with jittered backoff in between, and wraps the result.
func (s *Store) retry(ctx context.Context, op string, attempt func() error) error {
	return s.retryN(ctx, op, s.maxAttempts, backoffCap, attempt)
}

// retryN is retry with n attempts and pauses of at most maxPause.
func (s *Store) retryN(ctx context.Context, op string, n int, maxPause time.Duration, attempt func() error) error {
	var err error
	for i := range n {
		if i > 0 {
			if werr := pause(ctx, i, maxPause); werr != nil {
				return wrap(op, werr)
			}
		}
		if err = attempt(); !errors.Is(err, errConflict) {
			return wrap(op, err)
		}
	}
	return errs.Wrap(errs.Aborted, op, fmt.Errorf("lost %d races: %w", n, err))
}

// pause sleeps a random time in [0, min(maxPause, backoffBase·2^i)):
// "full jitter", so racers that lost together do not retry together.
func pause(ctx context.Context, i int, maxPause time.Duration) error {
	d := maxPause
	if i < 16 {
		d = min(maxPause, backoffBase<<i)
	}
	t := time.NewTimer(rand.N(d))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// --- ids and values

// docID maps an id to a valid Firestore document id, injectively: '/' and
// '%' are percent-escaped, as is the first byte of ids Firestore reserves
// ("", ".", "..", "__…__").
func docID(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		switch c := id[i]; c {
		case '/', '%':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	out := b.String()
	switch {
	case out == "":
		return "%"
	case out == "." || out == "..":
		return "%2E" + out[1:]
	case strings.HasPrefix(out, "__") && strings.HasSuffix(out, "__"):
		return "%5F" + out[1:]
	}
	return out
}

// spreadID is the document id of a job (and of its log): a short hash of
// the id in front, so that time-ordered job ids do not hotspot one range.
func spreadID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:2]) + "-" + docID(id)
}

// ts is how a time is indexed: truncated to Firestore's microsecond
// precision, so that what we compare, sort and put in cursors is exactly
// what the server stores.
func ts(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

// tsOrNil indexes a time that may be unset: null when zero, so range
// filters on it skip records that never had it.
func tsOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return ts(t)
}

func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", errs.Wrap(errs.InvalidArgument, "", err)
	}
	return string(b), nil
}

// decode reads the JSON record in snap's data field.
func decode[T any](snap *fs.DocumentSnapshot) (*T, error) {
	raw, err := snap.DataAt(fData)
	if err != nil {
		return nil, fmt.Errorf("corrupt record %s: %w", snap.Ref.Path, err)
	}
	data, ok := raw.(string)
	if !ok {
		return nil, fmt.Errorf("corrupt record %s: data is %T", snap.Ref.Path, raw)
	}
	v := new(T)
	if err := json.Unmarshal([]byte(data), v); err != nil {
		return nil, fmt.Errorf("corrupt record %s: %w", snap.Ref.Path, err)
	}
	return v, nil
}

// updates turns a document's fields into the field updates that rewrite
// all of them (Update is the write that takes an update-time precondition).
func updates(m map[string]any) []fs.Update {
	out := make([]fs.Update, 0, len(m))
	for k, v := range m {
		out = append(out, fs.Update{Path: k, Value: v})
	}
	return out
}

// get reads one document; a missing one is a snapshot that does not exist.
func get(ctx context.Context, ref *fs.DocumentRef) (*fs.DocumentSnapshot, error) {
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		return snap, nil
	}
	return snap, err
}

// getAll reads refs with BatchGetDocuments, getAllBatch at a time, the
// batches concurrently (one round trip up to 2,400 documents), and returns
// the snapshots in refs order.
func (s *Store) getAll(ctx context.Context, refs []*fs.DocumentRef) ([]*fs.DocumentSnapshot, error) {
	out := make([]*fs.DocumentSnapshot, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
		sem  = make(chan struct{}, getAllParallel)
	)
	for lo := 0; lo < len(refs); lo += getAllBatch {
		hi := min(lo+getAllBatch, len(refs))
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			snaps, err := s.c.GetAll(ctx, refs[lo:hi])
			if err != nil {
				mu.Lock()
				ferr = cmpErr(ferr, err)
				mu.Unlock()
				return
			}
			copy(out[lo:hi], snaps)
		})
	}
	wg.Wait()
	return out, ferr
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// uniq returns ids without repeats, in first-seen order.
func uniq(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// A cursor is the sort key (time at microsecond precision, id) of the last
// record of a page, opaque to callers and safe in a URL. Listings by queue
// time write "micros:id"; the job orders by start and end time put "s:" and
// "e:" in front, so a cursor is refused by a listing of another order.
func makeCursor(queued time.Time, id string) string { return makeOrderCursor("", queued, id) }

func makeOrderCursor(prefix string, t time.Time, id string) string {
	body := strconv.FormatInt(ts(t).UnixMicro(), 10) + ":" + id
	if prefix != "" {
		body = prefix + ":" + body
	}
	return base64.RawURLEncoding.EncodeToString([]byte(body))
}

func parseCursor(prefix, c string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err == nil {
		body, ok := string(b), true
		if prefix != "" {
			body, ok = strings.CutPrefix(body, prefix+":")
		}
		n, id, ok2 := strings.Cut(body, ":")
		if v, err := strconv.ParseInt(n, 10, 64); ok && ok2 && err == nil {
			return time.UnixMicro(v).UTC(), id, nil
		}
	}
	return time.Time{}, "", errs.E(errs.InvalidArgument, "", "malformed cursor %q", c)
}
