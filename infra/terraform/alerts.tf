# A dashboard of every metric of local.metrics, and alerts on dead letters,
# queue time and a fleet with no live worker.

resource "google_monitoring_dashboard" "tollgate" {
  dashboard_json = jsonencode({
    displayName = "Tollgate"
    mosaicLayout = {
      columns = 12
      tiles = [for i, m in local.metrics : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = m.name
          xyChart = {
            dataSets = [{
              plotType = "LINE"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = "metric.type = \"${local.metric_prefix}${m.name}\""
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = m.kind == "GAUGE" ? "ALIGN_MEAN" : (m.kind == "COUNTER" ? "ALIGN_RATE" : "ALIGN_PERCENTILE_95")
                    crossSeriesReducer = m.kind == "DISTRIBUTION" ? "REDUCE_MEAN" : "REDUCE_SUM"
                  }
                }
              }
            }]
          }
        }
      }]
    }
  })
  depends_on = [google_monitoring_metric_descriptor.metric]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "Tollgate: tasks dead-lettered"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "ci_task_dead_letters increased"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_task_dead_letters\" AND resource.type = \"global\""
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
    content = "Tasks reached the most delivery attempts and were moved to the dead-letter topic; see the UI's dead letters and the functions' logs."
  }

  depends_on = [google_monitoring_metric_descriptor.metric]
}

resource "google_monitoring_alert_policy" "queue_time" {
  display_name          = "Tollgate: jobs wait long for a worker"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "ci_job_queue_time p95 above ${var.alert_queue_time_seconds}s"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_job_queue_time\" AND resource.type = \"global\""
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

  conditions {
    display_name = "ci_jobs_queued above 0"
    condition_threshold {
      filter          = "metric.type = \"${local.metric_prefix}ci_jobs_queued\" AND resource.type = \"global\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "900s"
      aggregations {
        alignment_period     = "300s"
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
      duration        = "900s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  depends_on = [google_monitoring_metric_descriptor.metric]
}
