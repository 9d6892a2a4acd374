package gcsfake_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/tollgate-ci/tollgate/emulators/gcsfake"
)

// TestPreconditions: deletes and metadata updates honour generation and
// metageneration preconditions as Cloud Storage does, and a metadata
// update moves the metageneration.
func TestPreconditions(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true, Scheme: "http", Host: "127.0.0.1",
		PublicHost: ts.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	pre := gcsfake.Wrap(srv)
	ts.Config.Handler = pre
	ts.Start()
	defer ts.Close()
	defer srv.Stop()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "b"})
	ctx := context.Background()
	client, err := storage.NewClient(ctx, option.WithEndpoint(ts.URL+"/storage/v1/"), option.WithoutAuthentication(),
		option.WithHTTPClient(ts.Client()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	obj := client.Bucket("b").Object("o")
	w := obj.NewWriter(ctx)
	w.Write([]byte("data"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	attrs, err := obj.Attrs(ctx)
	if err != nil || attrs.Metageneration != 1 {
		t.Fatalf("attrs %+v, %v; want metageneration 1", attrs, err)
	}
	stale := storage.Conditions{GenerationMatch: attrs.Generation, MetagenerationMatch: 1}
	if _, err := obj.If(stale).Update(ctx, storage.ObjectAttrsToUpdate{Metadata: map[string]string{"k": "v"}}); err != nil {
		t.Fatalf("update under matching preconditions: %v", err)
	}
	if a, _ := obj.Attrs(ctx); a.Metageneration != 2 {
		t.Errorf("metageneration after an update = %d, want 2", a.Metageneration)
	}
	if err := obj.If(stale).Delete(ctx); !is412(err) {
		t.Errorf("delete with a stale metageneration: %v, want 412", err)
	}
	if err := obj.If(storage.Conditions{GenerationMatch: attrs.Generation + 1}).Delete(ctx); !is412(err) {
		t.Errorf("delete with a wrong generation: %v, want 412", err)
	}
	if err := obj.If(storage.Conditions{GenerationMatch: attrs.Generation, MetagenerationMatch: 2}).Delete(ctx); err != nil {
		t.Errorf("delete under matching preconditions: %v", err)
	}
	if pre.Refused() != 2 || pre.Patches() != 1 {
		t.Errorf("refused %d, patched %d; want 2 and 1", pre.Refused(), pre.Patches())
	}
}

func is412(err error) bool {
	var e *googleapi.Error
	return errors.As(err, &e) && e.Code == http.StatusPreconditionFailed
}
