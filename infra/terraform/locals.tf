locals {
  # One Pub/Sub topic, push subscription and CloudEvent function per
  # controller action: controller.Actions, in its order (checked by
  # infra_test.go).
  actions = [
    "tick",
    "check_new_cls",
    "check_new_cl",
    "cancel_older_jobs",
    "check_pending_cls",
    "check_pending_cl",
    "comment_and_vote",
    "queue_postsubmit_jobs",
    "cancel_job",
    "delete_stale_jobs",
    "reap_dead_workers",
    "delete_expired_logs",
    "delete_job_logs",
    "update_cl_metrics",
    "update_job_metrics",
    "update_queue_metrics",
    "cache_cleanup",
  ]

  # The HTTP functions (cloudrun.FnGerritWebhook, FnAPI, FnWorkerAPI).
  http_functions = ["gerrit_webhook", "api", "worker_api"]

  # Settings of every function unless var.function_overrides says otherwise.
  function_defaults = {
    memory          = "512Mi"
    timeout_seconds = 540
    concurrency     = 8
    max_instances   = 10
  }
  http_defaults = {
    memory          = "512Mi"
    timeout_seconds = 300
    concurrency     = 80
    max_instances   = 20
  }

  functions = merge(
    { for a in local.actions : a => merge(local.function_defaults, { for k, v in lookup(var.function_overrides, a, {}) : k => v if v != null }, { http = false }) },
    { for f in local.http_functions : f => merge(local.http_defaults, { for k, v in lookup(var.function_overrides, f, {}) : k => v if v != null }, { http = true }) },
  )

  # Cloud Run service names may not contain '_'.
  service_name = { for f in keys(local.functions) : f => "${var.prefix}-${replace(f, "_", "-")}" }

  topic_name        = { for a in local.actions : a => "${var.prefix}-${a}" }
  dead_letter_topic = "${var.prefix}-dead-letter"

  common_env = {
    TOLLGATE_CONFIG        = "gs://${google_storage_bucket.config.name}/${var.config_object}"
    TOLLGATE_PROJECT       = var.project
    TOLLGATE_TOPIC_PREFIX  = var.prefix
    TOLLGATE_BLOB_BUCKET   = google_storage_bucket.blobs.name
    TOLLGATE_CHANNEL       = tostring(var.worker_channel)
    TOLLGATE_EVENT_MAX_AGE = var.event_max_age
    TOLLGATE_LOG_LEVEL     = var.log_level
    TOLLGATE_REGION        = var.region
  }
}
