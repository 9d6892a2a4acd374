package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

// The listings the UI pages run read an index range of one page, never
// every job: no plan scans a table whole, and the unfiltered listings need
// no sort (the index gives the order, so LIMIT stops the read).
func TestListingPlansUseIndexes(t *testing.T) {
	s := openTemp(t)
	p, jobs := newPatchset(1, 3)
	if err := s.CreatePatchset(t.Context(), p, jobs); err != nil {
		t.Fatal(err)
	}
	var plans []string
	explainListing = func(ctx context.Context, tx *sql.Tx, query string, args []any) {
		rows, err := tx.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
		if err != nil {
			t.Errorf("explain %s: %v", query, err)
			return
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, detail)
		}
		plans = append(plans, query+"\n  "+strings.Join(lines, "\n  "))
	}
	defer func() { explainListing = nil }()
	_, next, _ := s.ListJobs(t.Context(), store.JobQuery{Limit: 1})
	failed := []model.State{model.Failed}
	for _, tc := range []struct {
		q      store.JobQuery
		sorted bool // the order comes from the index: no temporary sort
	}{
		{store.JobQuery{}, true},
		{store.JobQuery{Cursor: next}, true},
		{store.JobQuery{OrderBy: store.OrderStarted}, true},
		{store.JobQuery{OrderBy: store.OrderEnded}, true},
		{store.JobQuery{States: failed}, true},
		{store.JobQuery{States: failed, OrderBy: store.OrderEnded}, true},
		{store.JobQuery{States: []model.State{model.Queued, model.Started}}, false},
		{store.JobQuery{Src: "cls/1-1"}, true},
		{store.JobQuery{Worker: "w1"}, true},
		{store.JobQuery{States: []model.State{model.Queued}, QueuedBefore: base}, true},
	} {
		plans = nil
		if _, _, err := s.ListJobs(t.Context(), tc.q); err != nil {
			t.Fatal(err)
		}
		checkPlans(t, fmt.Sprintf("ListJobs(%+v)", tc.q), plans, tc.sorted)
	}
	for _, q := range []store.PatchsetQuery{{}, {Pending: true}, {Change: 1}, {Owner: "o@x"}} {
		plans = nil
		if _, _, err := s.ListPatchsets(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		checkPlans(t, fmt.Sprintf("ListPatchsets(%+v)", q), plans, true)
	}
}

func checkPlans(t *testing.T, what string, plans []string, sorted bool) {
	t.Helper()
	if len(plans) != 1 {
		t.Fatalf("%s: %d listing queries", what, len(plans))
	}
	for _, line := range strings.Split(plans[0], "\n")[1:] {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "SCAN ") && !strings.Contains(line, "INDEX") {
			t.Errorf("%s scans a whole table:\n%s", what, plans[0])
		}
		if sorted && strings.Contains(line, "TEMP B-TREE") {
			t.Errorf("%s sorts instead of reading the index in order:\n%s", what, plans[0])
		}
	}
}

// A claim reads one index entry per pool: a search of jobs_claim, with no
// sort, however long the queue.
func TestClaimPlanUsesIndex(t *testing.T) {
	s := openTemp(t)
	rows, err := s.db.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+claimQuery, "os=linux")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, detail)
	}
	plan := strings.Join(lines, "\n")
	if !strings.Contains(plan, "USING INDEX jobs_claim (pool=?)") || strings.Contains(plan, "TEMP B-TREE") {
		t.Fatalf("claim plan:\n%s", plan)
	}
}
