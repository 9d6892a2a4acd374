package gcs

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"cloud.google.com/go/storage"

	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/blob/blobtest"
	"github.com/tollgate-ci/tollgate/core/errs"
)

// server is fake-gcs-server, run in this process for the whole package.
var (
	server  *fakestorage.Server
	emuHost string // host:port
)

func TestMain(m *testing.M) {
	s, host, err := startFake()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-gcs-server:", err)
		os.Exit(1)
	}
	server, emuHost = s, host
	// Open honours this, as it does for `tollgate emulators`.
	os.Setenv("STORAGE_EMULATOR_HOST", emuHost)
	code := m.Run()
	server.Stop()
	os.Exit(code)
}

// startFake starts the fake on a free port: reads go to the XML API at the
// public host, so the fake must know its own address before it starts.
func startFake() (*fakestorage.Server, string, error) {
	var lastErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		host := fmt.Sprintf("127.0.0.1:%d", port)
		s, err := fakestorage.NewServerWithOptions(fakestorage.Options{
			Scheme:     "http",
			Host:       "127.0.0.1",
			Port:       uint16(port),
			PublicHost: host,
		})
		if err == nil {
			return s, host, nil
		}
		lastErr = err // the port was taken in between; try another
	}
	return nil, "", lastErr
}

var bucketSeq atomic.Int64

// newBucket creates a fresh bucket on the fake and opens it.
func newBucket(t *testing.T, opts ...option.ClientOption) *Bucket {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), bucketSeq.Add(1))
	server.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name})
	b, err := Open(context.Background(), name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	blobtest.RunConformance(t, func(t *testing.T) blob.Bucket { return newBucket(t) })
}

var ctx = context.Background()

// TestEndpointOption opens the bucket through client options rather than
// STORAGE_EMULATOR_HOST, as a caller with its own endpoint would.
func TestEndpointOption(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	os.Unsetenv("STORAGE_EMULATOR_HOST")
	b := newBucket(t, option.WithEndpoint("http://"+emuHost+"/storage/v1/"), option.WithoutAuthentication())
	if _, err := b.Put(ctx, "x/y", strings.NewReader("hello"), "text/plain"); err != nil {
		t.Fatal(err)
	}
	got, err := blob.ReadAll(ctx, b, "x/y")
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

func TestMissingBucket(t *testing.T) {
	b, err := Open(ctx, "no-such-bucket")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Stat(ctx, "x"); !errs.Is(err, errs.NotFound) {
		t.Errorf("Stat in a missing bucket = %v, want NotFound", err)
	}
	if _, err := b.Put(ctx, "x", strings.NewReader("x"), ""); !errs.Is(err, errs.NotFound) {
		t.Errorf("Put in a missing bucket = %v, want NotFound", err)
	}
	if _, err := Open(ctx, ""); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("Open without a name = %v, want InvalidArgument", err)
	}
}

func TestDefaultContentType(t *testing.T) {
	b := newBucket(t)
	// Without a type the client would sniff "text/html" from these bytes.
	a, err := b.Put(ctx, "page", strings.NewReader("<html><body>x</body></html>"), "")
	if err != nil {
		t.Fatal(err)
	}
	if a.ContentType != DefaultContentType {
		t.Errorf("content type = %q, want %q", a.ContentType, DefaultContentType)
	}
}

// TestCanceledPut checks that a Put whose context ends leaves nothing.
func TestCanceledPut(t *testing.T) {
	b := newBucket(t)
	cctx, cancel := context.WithCancel(ctx)
	r := readerFunc(func(p []byte) (int, error) {
		cancel()
		return copy(p, "partial"), nil
	})
	if _, err := b.Put(cctx, "obj", r, "text/plain"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("Put with a canceled context = %v, want Unavailable", err)
	}
	if _, err := b.Stat(ctx, "obj"); !errs.Is(err, errs.NotFound) {
		t.Errorf("a canceled Put left an object: %v", err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestReaderErrorKeepsCode(t *testing.T) {
	b := newBucket(t)
	want := errs.E(errs.PermissionDenied, "source", "no")
	_, err := b.Put(ctx, "obj", io.MultiReader(strings.NewReader("abc"), readerFunc(func([]byte) (int, error) { return 0, want })), "")
	if !errors.Is(err, want) || !errs.Is(err, errs.PermissionDenied) {
		t.Errorf("Put = %v, want the reader's error and code", err)
	}
}

func TestSignedURL(t *testing.T) {
	b := newBucket(t)
	tests := []struct {
		name string
		ttl  time.Duration
		want errs.Code
	}{
		{"a/b", time.Minute, errs.FailedPrecondition}, // the emulator cannot sign
		{"a/b", 0, errs.InvalidArgument},
		{"a/b", 8 * 24 * time.Hour, errs.InvalidArgument},
		{"../x", time.Minute, errs.InvalidArgument},
	}
	for _, tc := range tests {
		if _, err := b.SignedURL(ctx, tc.name, tc.ttl); !errs.Is(err, tc.want) {
			t.Errorf("SignedURL(%q, %v) = %v, want %v", tc.name, tc.ttl, err, tc.want)
		}
	}
}

// TestSignedURLWithKey signs with a service account key, as production
// does with a key file, and checks the URL's shape (nothing verifies the
// signature offline).
func TestSignedURLWithKey(t *testing.T) {
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	os.Unsetenv("STORAGE_EMULATOR_HOST")
	key := serviceAccountKey(t)
	b, err := Open(ctx, "some-bucket", option.WithAuthCredentialsJSON(option.ServiceAccount, key))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	u, err := b.SignedURL(ctx, "logs/job 1/0", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"https://storage.googleapis.com/some-bucket/logs/job%201/0?", "X-Goog-Algorithm=GOOG4-RSA-SHA256",
		"X-Goog-Credential=tollgate%40example.iam.gserviceaccount.com", "X-Goog-Signature="} {
		if !strings.Contains(u, want) {
			t.Errorf("signed URL %s lacks %q", u, want)
		}
	}
	// The client measures the ttl from its own now, a moment after ours.
	if !strings.Contains(u, "X-Goog-Expires=600&") && !strings.Contains(u, "X-Goog-Expires=599&") {
		t.Errorf("signed URL %s does not expire in 10 minutes", u)
	}
}

func TestMapErr(t *testing.T) {
	tests := []struct {
		err  error
		want errs.Code
	}{
		{storage.ErrObjectNotExist, errs.NotFound},
		{fmt.Errorf("wrapped: %w", storage.ErrBucketNotExist), errs.NotFound},
		{&googleapi.Error{Code: 412}, errs.FailedPrecondition},
		{&googleapi.Error{Code: 429}, errs.ResourceExhausted},
		{&googleapi.Error{Code: 503}, errs.Unavailable},
		{&googleapi.Error{Code: 500}, errs.Unavailable},
		{&googleapi.Error{Code: 403}, errs.PermissionDenied},
		{&googleapi.Error{Code: 400}, errs.InvalidArgument},
		{&googleapi.Error{Code: 404}, errs.NotFound},
		{status.Error(codes.FailedPrecondition, "x"), errs.FailedPrecondition},
		{status.Error(codes.ResourceExhausted, "x"), errs.ResourceExhausted},
		{status.Error(codes.Unavailable, "x"), errs.Unavailable},
		{context.DeadlineExceeded, errs.Unavailable},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, errs.Unavailable},
		{errs.E(errs.AlreadyExists, "x", "y"), errs.AlreadyExists},
		{errors.New("odd"), errs.Unknown},
		{&googleapi.Error{Code: http.StatusTeapot}, errs.Unknown},
	}
	for _, tc := range tests {
		if got := errs.CodeOf(mapErr("op", tc.err)); got != tc.want {
			t.Errorf("mapErr(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// serviceAccountKey returns a made-up service account key file.
func serviceAccountKey(t *testing.T) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	key, err := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "tollgate-test",
		"private_key_id": "0123456789abcdef",
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   "tollgate@example.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestFailedReaderAfterFirstChunk fails the source after the writer has
// sent its first 16 MiB chunk of a resumable upload: cancelling must still
// leave no object, since GCS finalises only on the last chunk.
func TestFailedReaderAfterFirstChunk(t *testing.T) {
	b := newBucket(t)
	const size = 17 << 20
	n := 0
	r := readerFunc(func(p []byte) (int, error) {
		if n >= size {
			return 0, errors.New("source broke")
		}
		m := min(len(p), size-n)
		n += m
		return m, nil
	})
	if _, err := b.Put(ctx, "big", r, ""); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	if _, err := b.Stat(ctx, "big"); !errs.Is(err, errs.NotFound) {
		t.Errorf("a failed Put left an object: %v", err)
	}
}
