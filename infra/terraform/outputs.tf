output "webhook_url" {
  description = "The URL Gerrit's webhooks plugin posts to; append ?token= with the webhook-token secret."
  value       = google_cloud_run_v2_service.function["gerrit_webhook"].uri
}

output "ui_url" {
  description = "The web UI and REST API (the api function)."
  value       = google_cloud_run_v2_service.function["api"].uri
}

output "worker_api_url" {
  description = "The URL workers connect to (tollgate worker --server)."
  value       = google_cloud_run_v2_service.function["worker_api"].uri
}

output "config_url" {
  description = "Where to upload the Tollgate config (TOLLGATE_CONFIG)."
  value       = "gs://${google_storage_bucket.config.name}/${var.config_object}"
}

output "artifacts_bucket" {
  description = "The logs and artifacts bucket (TOLLGATE_BLOB_BUCKET)."
  value       = google_storage_bucket.blobs.name
}

output "cache_bucket" {
  description = "The artifact cache bucket: the config's cache.bucket."
  value       = google_storage_bucket.cache.name
}

output "secrets" {
  description = "The Secret Manager secrets to add a version to."
  value       = { for k, s in google_secret_manager_secret.secret : k => s.secret_id }
}

output "dashboard" {
  description = "The Cloud Monitoring dashboard id."
  value       = google_monitoring_dashboard.tollgate.id
}

output "worker_group" {
  description = "The worker managed instance group (empty without a fleet), for gcloud compute instance-groups managed ... --zone worker_zone."
  value       = join("", [for g in google_compute_instance_group_manager.worker : g.name])
}

output "service_accounts" {
  description = "Every service account of the deployment: one per function, the push invoker, the scheduler and the workers."
  value = merge(
    { for f, sa in google_service_account.function : "fn/${f}" => sa.email },
    {
      pubsub_invoker = google_service_account.pubsub_invoker.email
      scheduler      = google_service_account.scheduler.email
      worker         = google_service_account.worker.email
    },
  )
}
