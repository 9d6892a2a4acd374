package main

import (
	"context"
	"testing"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

func TestChaos(t *testing.T) {
	for _, bad := range []string{"nope", "fail=2", "fail=x", "seed=-1"} {
		if _, err := parseChaos(bad); err == nil {
			t.Errorf("parseChaos(%q) accepted", bad)
		}
	}
	if c, err := parseChaos(""); c != nil || err != nil {
		t.Errorf("empty spec: %v %v, want off", c, err)
	}
	c, err := parseChaos("duplicate,fail=0.3,seed=7")
	if err != nil {
		t.Fatal(err)
	}
	runs, fails := 0, 0
	h := c.wrap(func(context.Context, tasks.Task) error { runs++; return nil })
	const n = 2000
	for i := 0; i < n; i++ {
		if err := h(context.Background(), tasks.Task{}); err != nil {
			if !errs.Transient(err) {
				t.Fatalf("chaos error %v is not transient", err)
			}
			fails++
		}
	}
	if f := float64(fails) / n; f < 0.25 || f > 0.35 {
		t.Errorf("failed %.2f of deliveries, want about 0.3", f)
	}
	// Half the failures happen before the handler: it ran twice per delivery otherwise.
	if want := 2 * (n - fails/2); runs < want-2*n/20 || runs > want+2*n/20 {
		t.Errorf("handler ran %d times for %d deliveries with %d failures", runs, n, fails)
	}
}
