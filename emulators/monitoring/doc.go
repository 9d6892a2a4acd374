// Package monitoring is a fake of Cloud Monitoring's MetricService (API v3)
// over gRPC, for tests and local runs of programs that write custom metrics.
// Google ships no emulator for Cloud Monitoring; this one exists so that a
// writer's handling of the real service's write limits can be tested
// without a project.
//
// # Scope
//
// Implemented: CreateMetricDescriptor, GetMetricDescriptor,
// ListMetricDescriptors, DeleteMetricDescriptor, CreateTimeSeries and
// ListTimeSeries. Every other MetricService method answers Unimplemented.
// State lives in memory, per project, and is lost on Close.
//
// CreateTimeSeries enforces the documented write rules:
//
//   - at most 200 TimeSeries per request, each with exactly one point, no
//     series twice, and a metric type and a resource on each; a request
//     breaking these is refused whole with InvalidArgument;
//   - the point's type must match the descriptor's value type and the
//     series' kind (if given) its metric kind; the series may only use
//     labels the descriptor declares; the resource type must be one of
//     global, generic_task, generic_node, gce_instance or k8s_container
//     with all its labels and no others (project_id defaults to the
//     request's project);
//   - intervals as TimeInterval documents them: a GAUGE point has no start
//     or start == end; a CUMULATIVE or DELTA point has start < end; end no
//     more than 25 h in the past or 5 min in the future of the server clock;
//   - points of one series in time order: a new end time after the last
//     one, a CUMULATIVE start time that stays the same or (a reset) comes
//     after the last end time, DELTA intervals that do not overlap;
//   - at most one point per sampling period (Options.SamplingPeriod, 5 s
//     by default, the floor for custom metrics) per series, measured, as
//     the real service does, between the end times of the points.
//
// Writing to a custom.googleapis.com/ type that has no descriptor creates
// one, as the real service does: kind from the series (GAUGE by default,
// or CUMULATIVE; DELTA is refused), value type from the point (BOOL,
// INT64, DOUBLE or DISTRIBUTION), and the series' labels as STRING labels.
// Other types need a descriptor first.
//
// Series that break a per-series rule are refused while the others in the
// request are written, like the real service: the call fails with
// InvalidArgument, the message lists each failure with the indexes of the
// series it refused ("...: timeSeries[0-2,7]"), and the status carries a
// CreateTimeSeriesSummary detail with the total and successful point
// counts and the failed count per status code (whose status, as in the
// real responses, has a code and no message).
//
// Messages reproduced verbatim from the real service: "Points must be
// written in order. One or more of the points specified had an older start
// time than the most recent point.", "One or more points were written more
// frequently than the maximum sampling period configured for the
// metric." (followed, as there, by the metric and both timestamps), "One
// or more TimeSeries could not be written", "Value type for metric M must
// be T, but is U.", "The start time must be before the end time (...) for
// the non-gauge metric 'M'.", "The set of resource labels is incomplete.
// Missing labels: (...).", "Request was missing field timeSeries." The
// rest are modelled on those; clients should branch on codes, not texts.
//
// # Differences from the real service
//
//   - No authentication, quotas, rate limits or billing; no monitored
//     resource descriptors beyond the five types above; only the latest
//     Options.MaxPoints points per project are kept, not six weeks.
//   - Descriptor changes apply at once (the real service is eventually
//     consistent), and changing a descriptor's kind or value type deletes
//     its points (the real service makes them unusable).
//   - ListTimeSeries filters only on metric.type (required, with = or
//     starts_with), metric.labels.KEY, resource.type and
//     resource.labels.KEY, joined by AND; it neither aligns nor reduces
//     (a request asking to is refused with Unimplemented) and returns raw
//     points, newest first, whose end time is in (start, end] of the
//     interval. ListMetricDescriptors takes the same metric.type filter.
//   - Values are not checked beyond types and distribution consistency
//     (count equal to the sum of bucket counts); a CUMULATIVE value may go
//     down without a new start time.
//
// Tests read what was written through Server's accessors (Series,
// Descriptor, Calls, BatchSizes) and can make the next calls fail with
// FailNext.
package monitoring
