# A dashboard of every metric of local.metrics and the Pub/Sub backlog, and
# alerts on dead letters, queue time, a fleet with no live worker and ticks
# that stopped. Each threshold says why it is what it is.

resource "google_monitoring_dashboard" "tollgate" {
  dashboard_json = jsonencode({
    displayName = "Tollgate"
    mosaicLayout = {
      columns = 12
      tiles = concat([for i, m in local.metrics : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = m.kind == "DISTRIBUTION" ? "${m.name} (p95)" : m.name
          xyChart = {
            dataSets = [{
              plotType = "LINE"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = "metric.type = \"${local.metric_prefix}${m.name}\""
                  # Gauges: the latest value (written to the global
                  # resource); counters: per second, summed over instances;
                  # distributions: the 95th percentile of all instances'
                  # points. One line per label value (job_type, action, method).
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = m.kind == "GAUGE" ? "ALIGN_MEAN" : (m.kind == "COUNTER" ? "ALIGN_RATE" : "ALIGN_DELTA")
                    crossSeriesReducer = m.kind == "DISTRIBUTION" ? "REDUCE_PERCENTILE_95" : "REDUCE_SUM"
                    groupByFields      = [for l in m.labels : "metric.label.${l}"]
                  }
                }
              }
            }]
          }
        }
        }], [{
        xPos   = 0
        yPos   = ceil(length(local.metrics) / 2) * 4
        width  = 12
        height = 4
        widget = {
          title = "Pub/Sub: undelivered tasks per subscription"
          xyChart = {
            dataSets = [{
              plotType = "LINE"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = "metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = starts_with(\"${var.prefix}-\")"
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = "ALIGN_MEAN"
                    crossSeriesReducer = "REDUCE_SUM"
                    groupByFields      = ["resource.label.subscription_id"]
                  }
                }
              }
            }]
          }
        }
      }])
    }
  })
  depends_on = [google_monitoring_metric_descriptor.metric]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "Tollgate: tasks dead-lettered"
  combiner              = "OR"
  notification_channels = var.notification_channels

  # Any dead letter: a task failed max_delivery_attempts deliveries over
  # Pub/Sub's 10 s..600 s backoff (a quarter of an hour or more of failing),
  # was malformed, or outlived TOLLGATE_EVENT_MAX_AGE. A healthy deployment
  # has none, so one is worth a look. Two sources: the functions count what
  # they bury themselves (ci_task_dead_letters, a cumulative metric each
  # instance writes to its generic_task resource), and Pub/Sub counts what
  # its dead-letter policy forwards (the functions cannot always tell a last
  # attempt: functions-framework-go does not pass the delivery attempt on).
  conditions {
    display_name = "ci_task_dead_letters increased"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_task_dead_letters\" AND resource.type = \"generic_task\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "Pub/Sub dead-lettered messages"
    condition_threshold {
      filter          = "metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = starts_with(\"${var.prefix}-\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    content = "Tasks were moved to the dead-letter topic. See the UI's dead letters (/tasks/dead, or GET /api/v1/tasks/dead) and the function's logs; infra/README.md, \"Purge a queue\", says how to replay or drop them."
  }

  depends_on = [google_monitoring_metric_descriptor.metric]
}

resource "google_monitoring_alert_policy" "queue_time" {
  display_name          = "Tollgate: jobs wait long for a worker"
  combiner              = "OR"
  notification_channels = var.notification_channels

  # Default 15 minutes at p95 for 15 minutes: scaling from zero takes about
  # 4 minutes (a tick writes ci_job_queue_len each minute, the autoscaler
  # reacts within a minute or two, a VM boots and installs git and
  # bubblewrap in 1 to 2), and the fair order staggers one change's jobs by
  # a minute each; waits longer than that, sustained, mean the fleet is at
  # workers_max or its VMs do not start.
  conditions {
    display_name = "ci_job_queue_time p95 above ${var.alert_queue_time_seconds}s"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_job_queue_time\" AND resource.type = \"generic_task\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_queue_time_seconds
      duration        = "900s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
      }
    }
  }

  depends_on = [google_monitoring_metric_descriptor.metric]
}

resource "google_monitoring_alert_policy" "no_workers" {
  display_name          = "Tollgate: jobs queued and no live worker"
  combiner              = "AND"
  notification_channels = var.notification_channels

  # Jobs queued and no worker alive for 7 minutes: longer than a scale from
  # zero takes (about 4 minutes, see queue_time), shorter than
  # timeouts.no_resource (10 minutes by default), after which such jobs end
  # NO_RESOURCE: the alert comes while they can still run. Both gauges are
  # written each minute by the tick (update_queue_metrics).
  conditions {
    display_name = "ci_jobs_queued above 0"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_jobs_queued\" AND resource.type = \"global\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "420s"
      aggregations {
        alignment_period     = "120s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  conditions {
    display_name = "ci_workers_alive at 0"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_workers_alive\" AND resource.type = \"global\""
      comparison      = "COMPARISON_LT"
      threshold_value = 1
      duration        = "420s"
      aggregations {
        alignment_period     = "120s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  depends_on = [google_monitoring_metric_descriptor.metric]
}

# No tick for 5 minutes: every tick defers update_queue_metrics, which
# writes ci_job_queue_len, so its absence means ticks stopped (Cloud
# Scheduler, the tick function or Pub/Sub): nothing polls Gerrit, ends
# patchsets or feeds the autoscaler. Absence conditions need at least
# 2 minutes; 5 covers a missed tick or two.
resource "google_monitoring_alert_policy" "no_tick" {
  display_name          = "Tollgate: no tick for 5 minutes"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "ci_job_queue_len absent"
    condition_absent {
      filter   = "metric.type = \"${local.metric_prefix}ci_job_queue_len\" AND resource.type = \"global\""
      duration = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }
    }
  }

  documentation {
    content = "No tick has written ci_job_queue_len for 5 minutes. Check the Cloud Scheduler job {prefix}-tick (its last run and status), the tick function's logs, and the {prefix}-tick-push subscription's backlog; infra/README.md, \"Read the dashboard\"."
  }

  depends_on = [google_monitoring_metric_descriptor.metric]
}
