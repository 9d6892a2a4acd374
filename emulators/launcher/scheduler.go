package launcher

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
)

// schedule is one Cloud Scheduler job: publish data to action's topic
// every period.
type schedule struct {
	action string
	topic  string // topic ID
	data   string // JSON object
	every  time.Duration
	now    bool // also once at start
}

// scheduler publishes messages the way Cloud Scheduler's Pub/Sub target
// does: the data and the static attributes action and schema, no task id
// (the message id names the task), through the emulator's REST API.
type scheduler struct {
	host, project string
	log           *slog.Logger
	client        *http.Client

	stop chan struct{}
	wg   sync.WaitGroup
}

func newScheduler(host, project string, log *slog.Logger) *scheduler {
	return &scheduler{host: host, project: project, log: log,
		client: &http.Client{Timeout: 10 * time.Second}, stop: make(chan struct{})}
}

// start runs each schedule in its own goroutine until close.
func (s *scheduler) start(jobs []schedule) {
	for _, j := range jobs {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t := time.NewTicker(j.every)
			defer t.Stop()
			if j.now {
				s.fire(j)
			}
			for {
				select {
				case <-t.C:
					s.fire(j)
				case <-s.stop:
					return
				}
			}
		}()
	}
}

func (s *scheduler) fire(j schedule) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.publish(ctx, j.topic, j.action, j.data); err != nil {
		s.log.Warn("scheduler: publish failed", "action", j.action, "err", err.Error())
		return
	}
	s.log.Debug("scheduler: published", "action", j.action, "data", j.data)
}

// publish publishes one message with the attributes action and schema.
func (s *scheduler) publish(ctx context.Context, topic, action, data string) error {
	body, err := json.Marshal(map[string]any{"messages": []any{map[string]any{
		"data":       base64.StdEncoding.EncodeToString([]byte(data)),
		"attributes": map[string]string{pubsub.AttrAction: action, pubsub.AttrSchema: pubsub.Schema},
	}}})
	if err != nil {
		return err
	}
	u := fmt.Sprintf("http://%s/v1/projects/%s/topics/%s:publish", s.host, s.project, topic)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish to %s: HTTP %d: %s", topic, resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// close stops the schedules and waits for a publish in flight.
func (s *scheduler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}
