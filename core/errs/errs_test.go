package errs

import (
	"context"
	"fmt"
	"testing"
)

func TestCodeOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{nil, Unknown},
		{fmt.Errorf("plain"), Unknown},
		{E(NotFound, "op", "x"), NotFound},
		{fmt.Errorf("wrapped: %w", E(AlreadyExists, "op", "x")), AlreadyExists},
		{Wrap(Unavailable, "op", E(NotFound, "inner", "x")), Unavailable},
		{Wrap(Unknown, "op", E(NotFound, "inner", "x")), NotFound},
		{context.Canceled, Unavailable},
		{fmt.Errorf("op: %w", context.DeadlineExceeded), Unavailable},
		{Wrap(InvalidArgument, "op", context.Canceled), InvalidArgument},
	} {
		if got := CodeOf(tc.err); got != tc.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if Transient(nil) || Transient(E(InvalidArgument, "", "")) || !Transient(E(Unavailable, "", "")) || !Transient(fmt.Errorf("x")) {
		t.Error("Transient misclassifies")
	}
}
