package workerapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/functions/workerapi"
)

func TestRevoke(t *testing.T) {
	e := newEnv(t)
	hbBody, _ := json.Marshal(fleet.Heartbeat{})
	heartbeat := func(tok string) int {
		return do(t, e.srv.URL, rawReq{op: "heartbeat", token: tok, channel: ch, body: hbBody}).status
	}
	tok1, tok2 := e.enroll("w1"), e.enroll("w2")
	if err := workerapi.Revoke(e.ctx, e.st, "w1"); err != nil {
		t.Fatal(err)
	}
	if st := heartbeat(tok1); st != http.StatusForbidden {
		t.Errorf("heartbeat with a revoked token: %d, want 403", st)
	}
	if st := heartbeat(tok2); st != http.StatusOK {
		t.Errorf("another worker's token after the revoke: %d, want 200", st)
	}
	for _, id := range []string{"w1", "never-enrolled"} {
		if err := workerapi.Revoke(e.ctx, e.st, id); err != nil {
			t.Errorf("Revoke(%s) again: %v", id, err)
		}
	}
	// Enrolling again issues a working token.
	if st := heartbeat(e.enroll("w1")); st != http.StatusOK {
		t.Errorf("heartbeat after enrolling again: %d", st)
	}
}
