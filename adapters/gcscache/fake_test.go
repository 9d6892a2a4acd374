package gcscache

import (
	"context"
	"net/http/httptest"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"

	"github.com/tollgate-ci/tollgate/emulators/gcsfake"
)

// fakeGCS is fake-gcs-server in this process, behind gcsfake's
// preconditions, which the fake ignores and this adapter depends on.
// Without them, the tests of "used during a cleanup, kept" would pass or
// fail by luck.
type fakeGCS struct {
	srv    *fakestorage.Server
	client *storage.Client
	pre    *gcsfake.Preconditions
}

func newFakeGCS(t *testing.T, bucket string) *fakeGCS {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		NoListener: true, Scheme: "http", Host: "127.0.0.1", PublicHost: ts.Listener.Addr().String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	pre := gcsfake.Wrap(srv)
	ts.Config.Handler = pre
	ts.Start()
	t.Cleanup(func() { ts.Close(); srv.Stop() })
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket})
	client, err := storage.NewClient(context.Background(), option.WithEndpoint(ts.URL+"/storage/v1/"),
		option.WithoutAuthentication(), option.WithHTTPClient(ts.Client()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return &fakeGCS{srv: srv, client: client, pre: pre}
}
