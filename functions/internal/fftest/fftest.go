// Package fftest runs functions-framework-go in a test binary, so that
// pushes from the Pub/Sub emulator reach CloudEvent functions through the
// framework's own conversion of a push into a CloudEvent.
//
// funcframework serves a process-wide registry and never returns, so the
// server starts once per test binary, with one function at the path prefix
// "/projects/": a push subscription whose endpoint is Base(t) + "/" +
// topicName (projects/P/topics/T) is taken for a Pub/Sub message, the
// framework names the topic in the event's source, and the event goes to
// the function Route installed for that topic.
package fftest

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/tollgate-ci/tollgate/emulators/gcloud"
)

var (
	once   sync.Once
	base   string
	err    error
	routes sync.Map // topic name → func(context.Context, event.Event) error
)

// Base starts the server if needed and returns its base URL.
func Base(t testing.TB) string {
	t.Helper()
	once.Do(start)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

// Route sends the events of topicName (projects/P/topics/T) to fn until the
// test ends, and returns the push endpoint that reaches it.
func Route(t testing.TB, topicName string, fn func(context.Context, event.Event) error) string {
	t.Helper()
	b := Base(t)
	routes.Store(topicName, fn)
	t.Cleanup(func() { routes.Delete(topicName) })
	return b + "/" + topicName
}

func start() {
	// Without FUNCTION_TARGET the framework serves every registered
	// function at its path, the declaratively named ones included.
	os.Unsetenv("FUNCTION_TARGET")
	err = funcframework.RegisterCloudEventFunctionContext(context.Background(), "/projects/",
		func(ctx context.Context, e event.Event) error {
			topic := strings.TrimPrefix(e.Source(), "//pubsub.googleapis.com/")
			fn, ok := routes.Load(topic)
			if !ok {
				return fmt.Errorf("fftest: no route for source %q", e.Source())
			}
			return fn.(func(context.Context, event.Event) error)(ctx, e)
		})
	if err != nil {
		return
	}
	port, perr := gcloud.FreePort()
	if perr != nil {
		err = perr
		return
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	failed := make(chan error, 1)
	go func() { failed <- funcframework.StartHostPort("127.0.0.1", strconv.Itoa(port)) }()
	end := time.Now().Add(10 * time.Second)
	for {
		c, derr := net.Dial("tcp", addr)
		if derr == nil {
			c.Close()
			base = "http://" + addr
			return
		}
		select {
		case err = <-failed:
			return
		default:
		}
		if time.Now().After(end) {
			err = fmt.Errorf("fftest: functions framework not listening on %s: %v", addr, derr)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
