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

func TestHTTPStatus(t *testing.T) {
	for c, want := range map[Code]int{NotFound: 404, InvalidArgument: 400, AlreadyExists: 409, FailedPrecondition: 409,
		Aborted: 409, PermissionDenied: 403, Unauthenticated: 401, ResourceExhausted: 429, Unavailable: 503, Unknown: 500} {
		if got := HTTPStatus(E(c, "op", "x")); got != want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c, got, want)
		}
	}
}
