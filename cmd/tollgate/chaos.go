package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"github.com/tollgate-ci/tollgate/core/errs"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// chaosEnv turns on unreliable task delivery in `tollgate up`, for the
// end-to-end suite's idempotency scenario: "duplicate" runs every delivery's
// handler twice, "fail=F" fails a fraction F of deliveries (half of them
// after the handler ran, so the retry repeats work that was done), and
// "seed=N" makes the choice repeatable. Comma-separated; unset: off.
const chaosEnv = "TOLLGATE_CHAOS"

type chaos struct {
	duplicate bool
	fail      float64
	mu        sync.Mutex
	rnd       *rand.Rand
}

// parseChaos parses a TOLLGATE_CHAOS value ("" gives nil).
func parseChaos(spec string) (*chaos, error) {
	if spec == "" {
		return nil, nil
	}
	c := &chaos{rnd: rand.New(rand.NewPCG(1, 2))}
	for part := range strings.SplitSeq(spec, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "duplicate":
			c.duplicate = true
		case "fail":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f >= 1 {
				return nil, fmt.Errorf("%s: fail=%q: want a fraction in [0, 1)", chaosEnv, v)
			}
			c.fail = f
		case "seed":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: seed=%q: want a number", chaosEnv, v)
			}
			c.rnd = rand.New(rand.NewPCG(n, n^0x9e3779b97f4a7c15))
		default:
			return nil, fmt.Errorf("%s: unknown setting %q (want duplicate, fail=F, seed=N)", chaosEnv, part)
		}
	}
	return c, nil
}

func (c *chaos) roll() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rnd.Float64()
}

// wrap returns h made unreliable as configured.
func (c *chaos) wrap(h tasks.Handler) tasks.Handler {
	return func(ctx context.Context, t tasks.Task) error {
		r := c.roll()
		if r < c.fail/2 {
			return errs.E(errs.Unavailable, "chaos", "delivery failed before the handler ran")
		}
		if err := h(ctx, t); err != nil {
			return err
		}
		if c.duplicate {
			if err := h(ctx, t); err != nil {
				return err
			}
		}
		if r < c.fail {
			return errs.E(errs.Unavailable, "chaos", "delivery failed after the handler ran")
		}
		return nil
	}
}
