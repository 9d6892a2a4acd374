// Package gcloud starts and stops the Google Cloud emulators that the
// installed Google Cloud CLI provides (Firestore and Pub/Sub), on 127.0.0.1
// ports, for tests and for `tollgate emulators up`.
//
// gcloud starts a java child that outlives gcloud when only gcloud is
// stopped, so each emulator runs in its own process group and Stop ends the
// whole group and any descendant that left it: SIGTERM, then SIGKILL after
// a grace period.
package gcloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/tollgate-ci/tollgate/emulators/proctree"
)

// ErrNoCLI means the gcloud command is not installed.
var ErrNoCLI = errors.New("gcloud: the Google Cloud CLI (gcloud) is not on PATH; install it with its emulators (cloud-firestore-emulator, pubsub-emulator)")

// Kind names an emulator.
type Kind string

const (
	Firestore Kind = "firestore"
	PubSub    Kind = "pubsub"
)

// Options configure an emulator.
type Options struct {
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// Log receives the emulator's output (default: discarded).
	Log io.Writer
	// Ready bounds the wait for the emulator to answer (default 60s).
	Ready time.Duration
	// Grace is the time between SIGTERM and SIGKILL on Stop (default 5s).
	Grace time.Duration
}

// Emulator is a running emulator.
type Emulator struct {
	Kind Kind
	Host string // 127.0.0.1:PORT, for FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST
	cmd  *exec.Cmd
	o    Options
	done chan struct{}
}

// Available reports whether the gcloud CLI is installed.
func Available() bool {
	_, err := exec.LookPath("gcloud")
	return err == nil
}

// Start starts an emulator and waits until it answers HTTP.
func Start(ctx context.Context, kind Kind, o Options) (*Emulator, error) {
	if !Available() {
		return nil, ErrNoCLI
	}
	if o.Ready <= 0 {
		o.Ready = 60 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	port := o.Port
	if port == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		port = p
	}
	host := "127.0.0.1:" + strconv.Itoa(port)
	var args []string
	switch kind {
	case Firestore:
		args = []string{"emulators", "firestore", "start", "--host-port=" + host}
	case PubSub:
		// Only the beta command honours --host-port on this CLI.
		args = []string{"beta", "emulators", "pubsub", "start", "--host-port=" + host}
	default:
		return nil, fmt.Errorf("gcloud: unknown emulator %q", kind)
	}
	cmd := exec.Command("gcloud", append(args, "--quiet")...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("gcloud: start %s emulator: %w", kind, err)
	}
	e := &Emulator{Kind: kind, Host: host, cmd: cmd, o: o, done: make(chan struct{})}
	go func() { cmd.Wait(); close(e.done) }()
	if err := e.waitReady(ctx); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

func (e *Emulator) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(e.o.Ready)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + e.Host + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-e.done:
			return fmt.Errorf("gcloud: %s emulator exited before it was ready (see its log)", e.Kind)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gcloud: %s emulator not ready at %s after %s", e.Kind, e.Host, e.o.Ready)
		}
	}
}

// Pid returns gcloud's process id.
func (e *Emulator) Pid() int { return e.cmd.Process.Pid }

// Stop ends the emulator: its process group and every descendant (the java
// child included) get SIGTERM, then SIGKILL after the grace period. It
// returns once nothing of it is left.
func (e *Emulator) Stop() error {
	pgid := e.cmd.Process.Pid
	pids := append(proctree.Descendants(pgid), pgid)
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(e.o.Grace)
	for time.Now().Before(deadline) && proctree.AnyAlive(pids) {
		time.Sleep(50 * time.Millisecond)
	}
	if proctree.AnyAlive(pids) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	<-e.done
	for i := 0; i < 100 && proctree.AnyAlive(pids); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if proctree.AnyAlive(pids) {
		return fmt.Errorf("gcloud: %s emulator processes %v still alive after SIGKILL", e.Kind, pids)
	}
	return nil
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ResetFirestore deletes every document of project's default database.
func ResetFirestore(ctx context.Context, host, project string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete,
		"http://"+host+"/emulator/v1/projects/"+project+"/databases/(default)/documents", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gcloud: reset firestore: HTTP %d", resp.StatusCode)
	}
	return nil
}
