# One Cloud Run service per function of functions/cloudrun: the same image
# (functions/cmd/tollgate-functions), told which function to serve by
# FUNCTION_TARGET, each under its own service account.

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = substr("${var.prefix}-fn-${replace(each.key, "_", "-")}", 0, 30)
  display_name = "Tollgate function ${each.key}"
}

resource "google_cloud_run_v2_service" "function" {
  for_each            = local.functions
  name                = local.service_name[each.key]
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false

  template {
    service_account                  = google_service_account.function[each.key].email
    timeout                          = "${each.value.timeout_seconds}s"
    max_instance_request_concurrency = each.value.concurrency

    scaling {
      min_instance_count = 0
      max_instance_count = each.value.max_instances
    }

    containers {
      image = var.image

      resources {
        limits = {
          cpu    = "1"
          memory = each.value.memory
        }
        cpu_idle = true
      }

      env {
        name  = "FUNCTION_TARGET"
        value = each.key
      }

      dynamic "env" {
        for_each = local.common_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.function_secrets[each.key]
        content {
          name = local.secrets[env.value].env
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.secret[env.value].secret_id
              version = "latest"
            }
          }
        }
      }
    }
  }

  depends_on = [
    google_project_service.api,
    google_secret_manager_secret_iam_member.function,
  ]
}

# CloudEvent functions: only the push subscriptions' account may invoke them.
resource "google_cloud_run_v2_service_iam_member" "pubsub_invoker" {
  for_each = toset(local.actions)
  name     = google_cloud_run_v2_service.function[each.key].name
  location = var.region
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_invoker.email}"
}

# HTTP functions authenticate their callers themselves (the webhook token,
# API tokens and sessions, worker credentials), so anyone may reach them.
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = toset(local.http_functions)
  name     = google_cloud_run_v2_service.function[each.key].name
  location = var.region
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# What every function needs: Firestore, metrics, its logs and artifacts,
# and the config.
resource "google_project_iam_member" "function_datastore" {
  for_each = local.functions
  project  = var.project
  role     = "roles/datastore.user"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

resource "google_project_iam_member" "function_metrics" {
  for_each = local.functions
  project  = var.project
  role     = "roles/monitoring.metricWriter"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

resource "google_storage_bucket_iam_member" "function_blobs" {
  for_each = local.functions
  bucket   = google_storage_bucket.blobs.name
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

resource "google_storage_bucket_iam_member" "function_config" {
  for_each = local.functions
  bucket   = google_storage_bucket.config.name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# The artifact cache: cache_cleanup evicts, worker_api signs cache access.
resource "google_storage_bucket_iam_member" "function_cache" {
  for_each = toset(["cache_cleanup", "worker_api"])
  bucket   = google_storage_bucket.cache.name
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}
