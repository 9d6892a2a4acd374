// Package metrics defines the Metrics port and the catalogue of metrics
// Tollgate writes. Every backend (Prometheus, Cloud Monitoring) and the infra
// descriptors are made from Catalogue, so a name exists in one place.
package metrics

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// Kind is how a metric's points combine.
type Kind int

const (
	Gauge        Kind = iota + 1 // the latest value wins
	Distribution                 // every observation counts
	Counter                      // a running total: Add adds to it
)

// Descriptor describes one metric.
type Descriptor struct {
	Name   string
	Kind   Kind
	Unit   string // "s", "1", "By"
	Labels []string
	Help   string
}

// Names of the metrics. The first four are Perfetto's baseline names; the
// autoscaler reads ci_job_queue_len.
const (
	QueueLen         = "ci_job_queue_len"
	QueueTime        = "ci_job_queue_time"
	RunTime          = "ci_job_run_time"
	CLCompletionTime = "ci_cl_completion_time"
	TaskRetries      = "ci_task_retries"
	TaskDeadLetters  = "ci_task_dead_letters"
	GerritCalls      = "ci_gerrit_calls"
	GerritErrors     = "ci_gerrit_errors"
	WorkersAlive     = "ci_workers_alive"
	WorkersBusy      = "ci_workers_busy"
	JobsQueued       = "ci_jobs_queued"
	JobsRunning      = "ci_jobs_running"
	// The artifact cache's (core/cache).
	CacheBytes          = "ci_cache_bytes"
	CacheObjects        = "ci_cache_objects"
	CacheEvictedBytes   = "ci_cache_evicted_bytes"
	CacheEvictedObjects = "ci_cache_evicted_objects"
	CacheOldestAge      = "ci_cache_oldest_age"
)

// Catalogue lists every metric Tollgate writes.
var Catalogue = []Descriptor{
	{QueueLen, Gauge, "1", nil, "Jobs queued or running; drives the worker autoscaler."},
	{QueueTime, Distribution, "s", []string{"job_type"}, "Time jobs wait in the queue before a worker starts them."},
	{RunTime, Distribution, "s", []string{"job_type"}, "Time jobs run, from start to end."},
	{CLCompletionTime, Distribution, "s", nil, "Time from a patchset's jobs being queued to the last one ending."},
	{TaskRetries, Counter, "1", []string{"action"}, "Deliveries of deferred tasks that failed and will be retried."},
	{TaskDeadLetters, Counter, "1", []string{"action"}, "Deferred tasks moved to the dead letter."},
	{GerritCalls, Counter, "1", []string{"method"}, "Calls to the Gerrit REST API."},
	{GerritErrors, Counter, "1", []string{"method"}, "Gerrit REST calls that failed."},
	{WorkersAlive, Gauge, "1", nil, "Workers that sent a heartbeat within the death timeout."},
	{WorkersBusy, Gauge, "1", nil, "Live workers running a job."},
	{JobsQueued, Gauge, "1", nil, "Jobs waiting for a worker."},
	{JobsRunning, Gauge, "1", nil, "Jobs running on a worker."},
	{CacheBytes, Gauge, "By", nil, "Bytes of objects in the artifact cache."},
	{CacheObjects, Gauge, "1", nil, "Objects in the artifact cache."},
	{CacheEvictedBytes, Counter, "By", nil, "Bytes evicted from the artifact cache."},
	{CacheEvictedObjects, Counter, "1", nil, "Objects evicted from the artifact cache."},
	{CacheOldestAge, Gauge, "s", nil, "Time since the least recently used object kept in the artifact cache was last used: its retention in practice."},
}

// Lookup returns the descriptor of name.
func Lookup(name string) (Descriptor, bool) {
	i := slices.IndexFunc(Catalogue, func(d Descriptor) bool { return d.Name == name })
	if i < 0 {
		return Descriptor{}, false
	}
	return Catalogue[i], true
}

// Validate reports InvalidArgument unless name is in the Catalogue, is of
// kind, and labels has exactly the descriptor's label keys. Every backend
// calls it first, so all of them refuse the same writes.
func Validate(name string, kind Kind, labels map[string]string) error {
	d, ok := Lookup(name)
	if !ok {
		return errs.E(errs.InvalidArgument, "", "unknown metric %q", name)
	}
	if d.Kind != kind {
		return errs.E(errs.InvalidArgument, "", "metric %s is a %s, not a %s", name, kindName(d.Kind), kindName(kind))
	}
	ok = len(labels) == len(d.Labels)
	for _, k := range d.Labels {
		if _, has := labels[k]; !has {
			ok = false
		}
	}
	if !ok {
		return errs.E(errs.InvalidArgument, "", "metric %s takes labels %v, got %v",
			name, d.Labels, slices.Sorted(maps.Keys(labels)))
	}
	return nil
}

func kindName(k Kind) string {
	switch k {
	case Gauge:
		return "gauge"
	case Distribution:
		return "distribution"
	case Counter:
		return "counter"
	}
	return fmt.Sprintf("kind %d", int(k))
}

// Metrics is the port. Writes are best effort: an implementation may
// coalesce or drop points to respect its backend's limits, and reports only
// errors the caller could act on. Label keys must be those of the
// descriptor. Safe for concurrent use.
type Metrics interface {
	// Set records the current value of a Gauge.
	Set(ctx context.Context, name string, labels map[string]string, v float64) error
	// Observe records one value of a Distribution.
	Observe(ctx context.Context, name string, labels map[string]string, v float64) error
	// Add adds v to a Counter.
	Add(ctx context.Context, name string, labels map[string]string, v float64) error
}

// Discard is a Metrics that writes nothing.
type Discard struct{}

func (Discard) Set(context.Context, string, map[string]string, float64) error     { return nil }
func (Discard) Observe(context.Context, string, map[string]string, float64) error { return nil }
func (Discard) Add(context.Context, string, map[string]string, float64) error     { return nil }
