// Package errs gives every error that crosses a port a code, so callers branch
// on the code and never on message text. Adapters map provider errors to codes
// in one place; everything else wraps with %w and keeps the code.
package errs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an error. The zero value is Unknown.
type Code int

const (
	Unknown            Code = iota
	NotFound                // the named thing does not exist
	AlreadyExists           // a create found the thing already there
	FailedPrecondition      // the thing is not in a state that allows the operation
	ResourceExhausted       // a quota or a size limit was hit
	Unavailable             // transient: retrying later may succeed
	InvalidArgument         // the input is malformed; retrying cannot fix it
	PermissionDenied        // the caller may not do this
	Unauthenticated         // the caller did not say who it is
	Aborted                 // a concurrent change won; retrying the whole operation may succeed
)

var names = [...]string{"Unknown", "NotFound", "AlreadyExists", "FailedPrecondition",
	"ResourceExhausted", "Unavailable", "InvalidArgument", "PermissionDenied",
	"Unauthenticated", "Aborted"}

func (c Code) String() string {
	if int(c) < len(names) {
		return names[c]
	}
	return fmt.Sprintf("Code(%d)", int(c))
}

// Error is an error with a code. Op names the operation that failed
// ("sqlite.ClaimJob"); Err, if set, is the cause.
type Error struct {
	Code Code
	Op   string
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	s := e.Op
	if e.Msg != "" {
		if s != "" {
			s += ": "
		}
		s += e.Msg
	}
	if e.Err != nil {
		if s != "" {
			s += ": "
		}
		s += e.Err.Error()
	}
	if s == "" {
		s = e.Code.String()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// E returns an error with code c, naming op, with a formatted message.
func E(c Code, op, format string, args ...any) error {
	return &Error{Code: c, Op: op, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns err with code c and op. A nil err gives nil.
func Wrap(c Code, op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: c, Op: op, Err: err}
}

// CodeOf returns the code of the outermost coded error in err's chain, or
// Unknown. context.Canceled and DeadlineExceeded are Unavailable.
func CodeOf(err error) Code {
	if err == nil {
		return Unknown
	}
	var e *Error
	for cur := err; errors.As(cur, &e); cur = e.Err {
		if e.Code != Unknown {
			return e.Code
		}
		if e.Err == nil {
			break
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Unavailable
	}
	return Unknown
}

// Is reports whether err carries code c.
func Is(err error, c Code) bool { return err != nil && CodeOf(err) == c }

// Transient reports whether retrying the same call later may succeed.
func Transient(err error) bool {
	switch CodeOf(err) {
	case Unavailable, Aborted, ResourceExhausted, Unknown:
		return err != nil
	}
	return false
}

// HTTPStatus is the HTTP status an error's code answers with: the one
// mapping every Tollgate HTTP handler shares.
func HTTPStatus(err error) int {
	switch CodeOf(err) {
	case NotFound:
		return http.StatusNotFound
	case InvalidArgument:
		return http.StatusBadRequest
	case AlreadyExists, FailedPrecondition, Aborted:
		return http.StatusConflict
	case PermissionDenied:
		return http.StatusForbidden
	case Unauthenticated:
		return http.StatusUnauthorized
	case ResourceExhausted:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
