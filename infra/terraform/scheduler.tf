# Cloud Scheduler publishes the periodic tasks, as `tollgate emulators up`
# does: data {} (or the task's arguments) with attributes action and schema,
# which the functions decode like any task (the message id names it).
#
# The tick fans out the same periodic work itself (each kind once per its
# period, through leases in the Store), so the other jobs are a backstop:
# they keep reaping dead workers and expiring logs should ticks stop, and
# duplicates are harmless (every action is idempotent).
locals {
  schedules = {
    tick = {
      action   = "tick"
      schedule = "* * * * *"
      data     = {}
    }
    reap-dead-workers = {
      action   = "reap_dead_workers"
      schedule = "*/5 * * * *"
      data     = {}
    }
    delete-stale-jobs = {
      action   = "delete_stale_jobs"
      schedule = "*/15 * * * *"
      data     = {}
    }
    delete-expired-logs = {
      action   = "delete_expired_logs"
      schedule = "*/15 * * * *"
      data     = {}
    }
    cache-cleanup = {
      action   = "cache_cleanup"
      schedule = "*/30 * * * *"
      data     = {}
    }
  }

  postsubmit_schedules = {
    for b in var.postsubmit_branches : "postsubmit-${replace(b, "/", "-")}" => {
      action   = "queue_postsubmit_jobs"
      schedule = var.postsubmit_schedule
      data     = { branch = b }
    }
  }
}

# Each job publishes through the Pub/Sub REST API (an HTTP target with an
# OAuth token of the scheduler's own account) rather than a Pub/Sub target:
# a Pub/Sub target publishes as Cloud Scheduler's service agent, whose role
# may publish to every topic of the project, while the scheduler account
# may publish only to the topics below (iam.tf).
resource "google_cloud_scheduler_job" "task" {
  for_each         = merge(local.schedules, local.postsubmit_schedules)
  name             = "${var.prefix}-${each.key}"
  region           = var.region
  schedule         = each.value.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "30s"

  # A failed publish is retried within the minute; the next run follows.
  retry_config {
    retry_count          = 2
    min_backoff_duration = "5s"
    max_backoff_duration = "20s"
    max_retry_duration   = "50s"
  }

  http_target {
    http_method = "POST"
    uri         = "https://pubsub.googleapis.com/v1/${google_pubsub_topic.action[each.value.action].id}:publish"
    headers = {
      "Content-Type" = "application/json"
    }
    body = base64encode(jsonencode({
      messages = [{
        data = base64encode(jsonencode(each.value.data))
        attributes = {
          action = each.value.action
          schema = "1"
        }
      }]
    }))
    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/pubsub"
    }
  }

  depends_on = [
    google_project_service.api,
    google_storage_bucket_object.config,
    google_pubsub_topic_iam_member.scheduler_publisher,
  ]
}
