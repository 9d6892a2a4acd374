package gcloud

import (
	"context"
	"net"
	"os"
	"testing"

	"github.com/tollgate-ci/tollgate/emulators/proctree"
)

// Starting and stopping each emulator leaves nothing running or listening.
func TestStartStopLeavesNothing(t *testing.T) {
	if !Available() {
		if os.Getenv("CI") == "true" {
			t.Fatal(ErrNoCLI)
		}
		t.Skip(ErrNoCLI)
	}
	for _, k := range []Kind{Firestore, PubSub} {
		e, err := Start(context.Background(), k, Options{})
		if err != nil {
			t.Fatal(err)
		}
		pids := append(proctree.Descendants(e.Pid()), e.Pid())
		if len(pids) < 2 {
			t.Errorf("%s: expected gcloud and a java child, found %v", k, pids)
		}
		if err := e.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, p := range pids {
			if proctree.Alive(p) {
				t.Errorf("%s: process %d survived Stop", k, p)
			}
		}
		if c, err := net.Dial("tcp", e.Host); err == nil {
			c.Close()
			t.Errorf("%s: %s still accepts connections", k, e.Host)
		}
	}
}
