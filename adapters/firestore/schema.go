package firestore

import (
	"slices"
	"strings"
	"time"

	fs "cloud.google.com/go/firestore"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

// Collection ids (before Options.Prefix).
const (
	cPatchsets   = "patchsets"
	cJobs        = "jobs"
	cPostsubmits = "postsubmits"
	cWorkers     = "workers"
	cLogs        = "logs"
	cChunks      = "chunks" // under logs/{h}-{job id}
	cLeases      = "leases"
	cMeta        = "meta"
	cSamples     = "samples"
)

// Field names.
const (
	fID          = "id"
	fData        = "data"
	fState       = "state"
	fSrc         = "src"
	fWorker      = "worker"
	fTimeQueued  = "time_queued"
	fTimeStarted = "time_started"
	fChange      = "change"
	fOwner       = "owner"
	fEnded       = "ended"
	fBranch      = "branch"
	fLastSeen    = "last_seen"
	fJobID       = "job_id"
	fSize        = "size"
	fExpireAt    = "expire_at"
	fOff         = "off"
	fHolder      = "holder"
	fExpires     = "expires"
	fValue       = "value"
	fTimeEnded   = "time_ended"
	fName        = "name"
	fT           = "t"
	fPool        = "pool"
	fPriority    = "priority"
	fOrder       = "order"
)

// claimBatch is how many of the first queued jobs one ClaimJob query
// fetches: enough that claimers who lose the head of the queue find
// another candidate without a new query, few enough to read little.
const claimBatch = 8

// maxIn is the most values Firestore takes in one "in" filter.
const maxIn = 30

// Order is the direction of an index field, as Firestore (and Terraform's
// google_firestore_index) names it.
type Order string

const (
	Ascending  Order = "ASCENDING"
	Descending Order = "DESCENDING"
)

// IndexField is one field of a composite index.
type IndexField struct {
	Path  string
	Order Order
}

// Index is a composite index (query scope COLLECTION) that production
// Firestore needs before it runs one of the store's queries.
type Index struct {
	Collection string // collection id, without Options.Prefix
	Fields     []IndexField
}

func (x Index) String() string {
	parts := make([]string, len(x.Fields))
	for i, f := range x.Fields {
		parts[i] = f.Path + " " + string(f.Order)
	}
	return x.Collection + "(" + strings.Join(parts, ", ") + ")"
}

// FieldOverride is a single-field setting: a TTL policy on a Timestamp
// field, or an exemption from automatic single-field indexing for a field
// no query reads (large values cost index writes for nothing).
type FieldOverride struct {
	Collection string // collection group id, without Options.Prefix
	Field      string
	TTL        bool // documents are deleted (within about a day) after this time
	NoIndex    bool // exempt from single-field indexes
}

// FieldOverrides lists the TTL policies and index exemptions the store
// expects. Log documents expire on expire_at, the expiry AppendLog was
// given; TTL does not delete subcollections, so every chunk carries its own
// expire_at, set later than its log's (see chunkTTLMargin) so that a log is
// never cut short while its document says it is live. expire_at of logs
// stays indexed: ListExpiredLogs queries it.
func FieldOverrides() []FieldOverride {
	return []FieldOverride{
		{Collection: cLogs, Field: fExpireAt, TTL: true},
		{Collection: cChunks, Field: fExpireAt, TTL: true, NoIndex: true},
		{Collection: cChunks, Field: fData, NoIndex: true},
		{Collection: cJobs, Field: fData, NoIndex: true},
		{Collection: cPatchsets, Field: fData, NoIndex: true},
		{Collection: cPostsubmits, Field: fData, NoIndex: true},
		{Collection: cWorkers, Field: fData, NoIndex: true},
		{Collection: cMeta, Field: fValue, NoIndex: true},
		{Collection: cSamples, Field: fValue, NoIndex: true},
	}
}

// Indexes lists every composite index the store's queries need, derived
// from the same query builders the methods use (allSpecs), so a new query
// shape cannot be added without its index showing up here.
func Indexes() []Index {
	seen := map[string]bool{}
	var out []Index
	for _, sp := range allSpecs() {
		if x, ok := sp.index(); ok && !seen[x.String()] {
			seen[x.String()] = true
			out = append(out, x)
		}
	}
	slices.SortFunc(out, func(a, b Index) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// cond is one filter of a query.
type cond struct {
	path, op string
	value    any
}

// spec is a query as data: the methods build specs and run them through
// Store.query, and Indexes derives the composite indexes from the same
// builders.
type spec struct {
	coll   string
	parent *fs.DocumentRef // for a subcollection
	where  []cond
	order  []IndexField
	after  []any // StartAfter values, one per order field
	limit  int
	sel    []string // fields to return; nil: all
}

// index returns the composite index sp needs, or false when Firestore's
// automatic single-field indexes serve it: a query on one field, or with
// only equality filters (served by merging single-field indexes).
func (sp spec) index() (Index, bool) {
	var eq, ineq []string
	fields := map[string]bool{}
	for _, c := range sp.where {
		if c.op == "==" || c.op == "in" {
			eq = append(eq, c.path)
		} else {
			ineq = append(ineq, c.path)
		}
		fields[c.path] = true
	}
	for _, o := range sp.order {
		fields[o.Path] = true
	}
	if len(fields) <= 1 || (len(sp.order) == 0 && len(ineq) == 0) {
		return Index{}, false
	}
	x := Index{Collection: sp.coll}
	slices.Sort(eq)
	for _, f := range slices.Compact(eq) {
		x.Fields = append(x.Fields, IndexField{f, Ascending})
	}
	x.Fields = append(x.Fields, sp.order...)
	// Firestore orders by inequality fields the query does not order by
	// after the given order, in the direction of its last field.
	dir := Ascending
	if len(sp.order) > 0 {
		dir = sp.order[len(sp.order)-1].Order
	}
	slices.Sort(ineq)
	for _, f := range slices.Compact(ineq) {
		if !slices.ContainsFunc(sp.order, func(o IndexField) bool { return o.Path == f }) {
			x.Fields = append(x.Fields, IndexField{f, dir})
		}
	}
	return x, true
}

// query builds the Firestore query of sp.
func (s *Store) query(sp spec) fs.Query {
	if s.observe != nil {
		s.observe(sp)
	}
	var q fs.Query
	if sp.parent != nil {
		q = sp.parent.Collection(s.prefix + sp.coll).Query
	} else {
		q = s.col(sp.coll).Query
	}
	for _, c := range sp.where {
		q = q.Where(c.path, c.op, c.value)
	}
	for _, o := range sp.order {
		dir := fs.Asc
		if o.Order == Descending {
			dir = fs.Desc
		}
		q = q.OrderBy(o.Path, dir)
	}
	if sp.after != nil {
		q = q.StartAfter(sp.after...)
	}
	if sp.limit > 0 {
		q = q.Limit(sp.limit)
	}
	if sp.sel != nil {
		q = q.Select(sp.sel...)
	}
	return q
}

// newestFirst is the order of every listing.
var newestFirst = []IndexField{{fTimeQueued, Descending}, {fID, Descending}}

// page applies a listing's cursor and page size (one more than the page,
// so the last page is known to be the last).
func page(sp spec, limit int, cursor string) (spec, error) {
	return pageBy(sp, fTimeQueued, "", limit, cursor)
}

// pageBy is page for a newest-first listing by the time field, whose
// cursors carry prefix.
func pageBy(sp spec, field, prefix string, limit int, cursor string) (spec, error) {
	sp.order = []IndexField{{field, Descending}, {fID, Descending}}
	sp.limit = store.Limit(limit) + 1
	if cursor != "" {
		t, id, err := parseCursor(prefix, cursor)
		if err != nil {
			return sp, err
		}
		sp.after = []any{t, id}
	}
	return sp, nil
}

// jobOrders are the field and cursor prefix of each job order.
var jobOrders = map[store.JobOrder]struct {
	field, prefix string
	time          func(*model.Job) time.Time
}{
	store.OrderQueued:  {fTimeQueued, "", func(j *model.Job) time.Time { return j.TimeQueued }},
	store.OrderStarted: {fTimeStarted, "s", func(j *model.Job) time.Time { return j.TimeStarted }},
	store.OrderEnded:   {fTimeEnded, "e", func(j *model.Job) time.Time { return j.TimeEnded }},
}

// epoch is earlier than any job's start or end: "field > epoch" keeps the
// jobs whose time is set (not null), as an order on the field needs.
var epoch = time.Unix(0, 0).UTC()

// claimSpec is the head of the queue of pools (at most maxIn of them), in
// claim order: priority, then fair order, then id.
func claimSpec(pools []string) spec {
	return spec{
		coll:  cJobs,
		where: []cond{{fState, "==", string(model.Queued)}, {fPool, "in", pools}},
		order: []IndexField{{fPriority, Ascending}, {fOrder, Ascending}, {fID, Ascending}},
		limit: claimBatch,
	}
}

func jobsSpec(q store.JobQuery) (spec, error) {
	sp := spec{coll: cJobs}
	if err := q.Check(); err != nil {
		return sp, err
	}
	if q.OrderBy == "" {
		q.OrderBy = store.OrderQueued
	}
	var states []string
	for _, st := range q.States {
		if !slices.Contains(states, string(st)) {
			states = append(states, string(st))
		}
	}
	switch {
	case len(states) == 1:
		sp.where = append(sp.where, cond{fState, "==", states[0]})
	case len(states) > 30: // Firestore's limit on "in"
		return sp, errs.E(errs.InvalidArgument, "", "%d states in one query", len(states))
	case len(states) > 1:
		sp.where = append(sp.where, cond{fState, "in", states})
	}
	if q.Src != "" {
		sp.where = append(sp.where, cond{fSrc, "==", q.Src})
	}
	if q.Worker != "" {
		sp.where = append(sp.where, cond{fWorker, "==", q.Worker})
	}
	if !q.StartedBefore.IsZero() {
		// time_started is null until a job starts: the filter skips those.
		sp.where = append(sp.where, cond{fTimeStarted, "<", ts(q.StartedBefore)})
	}
	if !q.QueuedBefore.IsZero() {
		sp.where = append(sp.where, cond{fTimeQueued, "<", ts(q.QueuedBefore)})
	}
	order := jobOrders[q.OrderBy]
	if q.OrderBy != store.OrderQueued {
		sp.where = append(sp.where, cond{order.field, ">", epoch})
	}
	return pageBy(sp, order.field, order.prefix, q.Limit, q.Cursor)
}

func countSpec(st model.State) spec {
	return spec{coll: cJobs, where: []cond{{fState, "==", string(st)}}}
}

func countSinceSpec(st model.State, since time.Time) spec {
	return spec{coll: cJobs, where: []cond{{fState, "==", string(st)}, {fTimeQueued, ">=", ts(since)}}}
}

// samplesSpec is the newest MaxSamples points of a series since a time.
func samplesSpec(name string, since time.Time) spec {
	return spec{
		coll:  cSamples,
		where: []cond{{fName, "==", name}, {fT, ">=", ts(since)}},
		order: []IndexField{{fT, Descending}},
		limit: store.MaxSamples,
	}
}

// oldSamplesSpec lists points older than before, for deletion.
func oldSamplesSpec(before time.Time, limit int) spec {
	return spec{coll: cSamples, where: []cond{{fT, "<", ts(before)}}, limit: limit, sel: []string{}}
}

func patchsetsSpec(q store.PatchsetQuery) (spec, error) {
	sp := spec{coll: cPatchsets}
	if q.Change != 0 {
		sp.where = append(sp.where, cond{fChange, "==", int64(q.Change)})
	}
	if q.Owner != "" {
		sp.where = append(sp.where, cond{fOwner, "==", q.Owner})
	}
	if err := q.Check(); err != nil {
		return sp, err
	}
	if q.Pending {
		sp.where = append(sp.where, cond{fEnded, "==", false})
	}
	if q.Ended {
		sp.where = append(sp.where, cond{fEnded, "==", true})
	}
	return page(sp, q.Limit, q.Cursor)
}

func postsubmitsSpec(branch string, limit int, cursor string) (spec, error) {
	sp := spec{coll: cPostsubmits}
	if branch != "" {
		sp.where = []cond{{fBranch, "==", branch}}
	}
	return page(sp, limit, cursor)
}

func latestPostsubmitSpec(branch string) spec {
	return spec{coll: cPostsubmits, where: []cond{{fBranch, "==", branch}}, order: newestFirst, limit: 1}
}

func workersSpec(seenBefore time.Time) spec {
	sp := spec{coll: cWorkers}
	if !seenBefore.IsZero() {
		sp.where = []cond{{fLastSeen, "<", ts(seenBefore)}}
	}
	return sp
}

func expiredLogsSpec(now time.Time, limit int) spec {
	return spec{
		coll:  cLogs,
		where: []cond{{fExpireAt, "<", ts(now)}},
		order: []IndexField{{fExpireAt, Ascending}},
		limit: store.Limit(limit),
		sel:   []string{fJobID},
	}
}

// chunksSpec reads a log's chunks that start before end, last first: the
// reader stops at the first one that starts at or before the offset it
// wants, so it reads exactly the chunks that overlap the range.
func chunksSpec(log *fs.DocumentRef, end int64) spec {
	return spec{
		coll:   cChunks,
		parent: log,
		where:  []cond{{fOff, "<", end}},
		order:  []IndexField{{fOff, Descending}},
	}
}

// allChunksSpec lists a log's chunks for deletion.
func allChunksSpec(log *fs.DocumentRef, limit int) spec {
	return spec{coll: cChunks, parent: log, limit: limit, sel: []string{}}
}

// allSpecs returns a spec of every shape the store's methods build: each
// builder with every combination of its optional filters.
func allSpecs() []spec {
	t := time.Unix(1, 0)
	out := []spec{claimSpec([]string{""}), latestPostsubmitSpec("b"), workersSpec(time.Time{}), workersSpec(t),
		expiredLogsSpec(t, 1), chunksSpec(nil, 1), allChunksSpec(nil, 1)}
	for _, st := range model.AllStates {
		out = append(out, countSpec(st), countSinceSpec(st, t))
	}
	out = append(out, samplesSpec("s", t), oldSamplesSpec(t, 1))
	for _, o := range []store.JobOrder{store.OrderStarted, store.OrderEnded} {
		for _, states := range [][]model.State{nil, {model.Failed}, {model.Failed, model.Completed}} {
			sp, _ := jobsSpec(store.JobQuery{OrderBy: o, States: states})
			out = append(out, sp)
		}
	}
	for _, states := range [][]model.State{nil, {model.Queued}, {model.Queued, model.Started}} {
		sp, _ := jobsSpec(store.JobQuery{States: states, QueuedBefore: t})
		out = append(out, sp)
	}
	for m := range 1 << 5 {
		q := store.JobQuery{}
		if m&1 != 0 {
			q.States = []model.State{model.Queued}
		}
		if m&2 != 0 {
			q.States = []model.State{model.Queued, model.Started}
		}
		if m&4 != 0 {
			q.Src = "s"
		}
		if m&8 != 0 {
			q.Worker = "w"
		}
		if m&16 != 0 {
			q.StartedBefore = t
		}
		sp, _ := jobsSpec(q)
		out = append(out, sp)
	}
	for m := range 1 << 3 {
		// Ended filters the same field as Pending: one shape serves both.
		q := store.PatchsetQuery{Change: m & 1, Pending: m&4 != 0}
		if m&2 != 0 {
			q.Owner = "o"
		}
		sp, _ := patchsetsSpec(q)
		out = append(out, sp)
	}
	for _, b := range []string{"", "b"} {
		sp, _ := postsubmitsSpec(b, 1, "")
		out = append(out, sp)
	}
	return out
}
