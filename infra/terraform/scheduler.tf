# Cloud Scheduler publishes the periodic tasks, as `tollgate emulators up`
# does: data {} (or the task's arguments) with attributes action and schema.
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

resource "google_cloud_scheduler_job" "task" {
  for_each = merge(local.schedules, local.postsubmit_schedules)
  name     = "${var.prefix}-${each.key}"
  region   = var.region
  schedule = each.value.schedule

  pubsub_target {
    topic_name = google_pubsub_topic.action[each.value.action].id
    data       = base64encode(jsonencode(each.value.data))
    attributes = {
      action = each.value.action
      schema = "1"
    }
  }

  depends_on = [google_project_service.api]
}
