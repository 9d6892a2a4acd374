// Package gcloudtest is the shared test helper for packages whose tests
// need the Google emulators: TestMain starts each emulator once per
// package, tests ask for its host, and everything started is stopped by
// PID at the end.
//
//	func TestMain(m *testing.M) { gcloudtest.Main(m, gcloud.Firestore) }
//	func TestX(t *testing.T) { host := gcloudtest.Host(t, gcloud.Firestore) ... }
//
// Without the gcloud CLI, tests that need an emulator skip with a clear
// message, unless CI=true: then a missing emulator fails the run.
package gcloudtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-ci/tollgate/emulators/gcloud"
)

var (
	hosts   = map[gcloud.Kind]string{}
	reasons = map[gcloud.Kind]string{}
)

// Main starts the emulators of kinds, runs the tests and stops them. It
// does not return.
func Main(m *testing.M, kinds ...gcloud.Kind) {
	os.Exit(run(m, kinds))
}

func run(m *testing.M, kinds []gcloud.Kind) int {
	ci := os.Getenv("CI") == "true"
	var started []*gcloud.Emulator
	defer func() {
		for _, e := range started {
			if err := e.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, "gcloudtest:", err)
			}
		}
	}()
	for _, k := range kinds {
		logf, err := os.CreateTemp("", "tollgate-"+string(k)+"-emulator-*.log")
		if err != nil {
			fmt.Fprintln(os.Stderr, "gcloudtest:", err)
			return 1
		}
		defer logf.Close()
		e, err := gcloud.Start(context.Background(), k, gcloud.Options{Log: logf})
		if err != nil {
			msg := fmt.Sprintf("%s emulator unavailable: %v (log: %s)", k, err, filepath.Clean(logf.Name()))
			if ci {
				fmt.Fprintln(os.Stderr, "gcloudtest: FAIL under CI=true:", msg)
				return 1
			}
			reasons[k] = msg
			continue
		}
		started = append(started, e)
		hosts[k] = e.Host
	}
	return m.Run()
}

// Host returns the host:port of the emulator of kind, or skips the test
// when it could not be started (outside CI).
func Host(t testing.TB, kind gcloud.Kind) string {
	t.Helper()
	if h, ok := hosts[kind]; ok {
		return h
	}
	if r, ok := reasons[kind]; ok {
		t.Skip("skipping: " + r)
	}
	t.Fatalf("gcloudtest: %s emulator not started; add it to gcloudtest.Main in TestMain", kind)
	return ""
}
