locals {
  # core/metrics Catalogue: every metric Tollgate writes (checked by
  # infra_test.go). Kinds map as adapters/monitoring creates them: GAUGE is
  # a DOUBLE gauge, COUNTER a cumulative DOUBLE, DISTRIBUTION a cumulative
  # distribution.
  metrics = [
    { name = "ci_job_queue_len", kind = "GAUGE", unit = "1", labels = [], help = "Jobs queued or running; drives the worker autoscaler." },
    { name = "ci_job_queue_time", kind = "DISTRIBUTION", unit = "s", labels = ["job_type"], help = "Time jobs wait in the queue before a worker starts them." },
    { name = "ci_job_run_time", kind = "DISTRIBUTION", unit = "s", labels = ["job_type"], help = "Time jobs run, from start to end." },
    { name = "ci_cl_completion_time", kind = "DISTRIBUTION", unit = "s", labels = [], help = "Time from a patchset's jobs being queued to the last one ending." },
    { name = "ci_task_retries", kind = "COUNTER", unit = "1", labels = ["action"], help = "Deliveries of deferred tasks that failed and will be retried." },
    { name = "ci_task_dead_letters", kind = "COUNTER", unit = "1", labels = ["action"], help = "Deferred tasks moved to the dead letter." },
    { name = "ci_gerrit_calls", kind = "COUNTER", unit = "1", labels = ["method"], help = "Calls to the Gerrit REST API." },
    { name = "ci_gerrit_errors", kind = "COUNTER", unit = "1", labels = ["method"], help = "Gerrit REST calls that failed." },
    { name = "ci_workers_alive", kind = "GAUGE", unit = "1", labels = [], help = "Workers that sent a heartbeat within the death timeout." },
    { name = "ci_workers_busy", kind = "GAUGE", unit = "1", labels = [], help = "Live workers running a job." },
    { name = "ci_jobs_queued", kind = "GAUGE", unit = "1", labels = [], help = "Jobs waiting for a worker." },
    { name = "ci_jobs_running", kind = "GAUGE", unit = "1", labels = [], help = "Jobs running on a worker." },
    { name = "ci_cache_bytes", kind = "GAUGE", unit = "By", labels = [], help = "Bytes of objects in the artifact cache." },
    { name = "ci_cache_objects", kind = "GAUGE", unit = "1", labels = [], help = "Objects in the artifact cache." },
    { name = "ci_cache_evicted_bytes", kind = "COUNTER", unit = "By", labels = [], help = "Bytes evicted from the artifact cache." },
    { name = "ci_cache_evicted_objects", kind = "COUNTER", unit = "1", labels = [], help = "Objects evicted from the artifact cache." },
    { name = "ci_cache_oldest_age", kind = "GAUGE", unit = "s", labels = [], help = "Time since the least recently used object kept in the artifact cache was last used: its retention in practice." },
  ]

  metric_prefix = "custom.googleapis.com/tollgate/"
}

resource "google_monitoring_metric_descriptor" "metric" {
  for_each     = { for m in local.metrics : m.name => m }
  type         = "${local.metric_prefix}${each.key}"
  display_name = each.key
  description  = each.value.help
  metric_kind  = each.value.kind == "GAUGE" ? "GAUGE" : "CUMULATIVE"
  value_type   = each.value.kind == "DISTRIBUTION" ? "DISTRIBUTION" : "DOUBLE"
  unit         = each.value.unit

  dynamic "labels" {
    for_each = each.value.labels
    content {
      key        = labels.value
      value_type = "STRING"
    }
  }

  depends_on = [google_project_service.api]
}
