package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/emulators/gcloud"
	"github.com/tollgate-ci/tollgate/functions/api"
)

// The test binary runs main when asked, so the tests start the real
// command (with the registrations of functions/cloudrun) as a process.
func TestMain(m *testing.M) {
	if os.Getenv("TOLLGATE_FUNCTIONS_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// start runs the command with env and returns its base URL; it is killed
// (by its PID) when the test ends.
func start(t *testing.T, env ...string) (string, *exec.Cmd) {
	t.Helper()
	port, err := gcloud.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"TOLLGATE_FUNCTIONS_RUN_MAIN=1", "LOCAL_ONLY=true",
		"PORT=" + strconv.Itoa(port), "TOLLGATE_LOG_LEVEL=error"}, env...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	end := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return "", cmd
		default:
		}
		resp, err := http.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			return base, cmd
		}
		if time.Now().After(end) {
			t.Fatalf("not listening on %s: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTargetServedAtRoot: FUNCTION_TARGET selects a registered function,
// served at every path; without its environment it answers 503 with the
// API's error shape (the runtime is built on first call, not at start).
func TestTargetServedAtRoot(t *testing.T) {
	base, _ := start(t, "FUNCTION_TARGET=api", "TOLLGATE_CONFIG=", "TOLLGATE_PROJECT=", "TOLLGATE_BLOB_BUCKET=")
	if base == "" {
		t.Fatal("the command exited")
	}
	resp, err := http.Get(base + "/api/v1/cls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b api.ErrorBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || resp.StatusCode != 503 || b.Error.Code != "Unavailable" ||
		!strings.Contains(b.Error.Message, "TOLLGATE_CONFIG") {
		t.Errorf("GET /api/v1/cls: %d %+v %v; want 503 naming the missing TOLLGATE_CONFIG", resp.StatusCode, b, err)
	}
}

// TestUnknownTarget: a FUNCTION_TARGET that names no function stops the
// command with an error instead of serving something else.
func TestUnknownTarget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	port, _ := gcloud.FreePort()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TOLLGATE_FUNCTIONS_RUN_MAIN=1", "LOCAL_ONLY=true", "PORT="+strconv.Itoa(port), "FUNCTION_TARGET=no_such_fn")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no_such_fn") {
		t.Errorf("exit %v, output %q; want a failure naming the target", err, out)
	}
}
