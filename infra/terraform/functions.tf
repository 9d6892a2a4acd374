# One Cloud Run service per function of functions/cloudrun: the same image
# (var.image, the Dockerfile's default target: functions/cmd/tollgate-functions),
# told which function to serve by FUNCTION_TARGET, each under its own
# service account (iam.tf).

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

    # An instance reads the config and its secrets once, when it starts: a
    # new config (its MD5 here), or a new var.rollout after a secret was
    # rotated, rolls out a new revision, whose instances read them again.
    labels = {
      tollgate-config  = local.config_md5
      tollgate-rollout = var.rollout
    }

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

  # The first calls find the config and their grants in place.
  depends_on = [
    google_project_service.api,
    google_storage_bucket_object.config,
    google_secret_manager_secret_iam_member.function,
    google_storage_bucket_iam_member.function_config,
    google_project_iam_member.function_datastore,
  ]
}
