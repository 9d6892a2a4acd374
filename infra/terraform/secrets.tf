# Secret Manager secrets. Terraform creates the secrets, not their values:
# add a version of each with gcloud (see infra/README.md), so no secret
# value is ever in Terraform state.
locals {
  # Secret id suffix => the environment variable the functions read it from
  # and the functions that get it (iam.tf grants each of them access).
  # Every function gets the Gerrit credentials, not only the four actions
  # that call Gerrit: functions/cloudrun Build refuses to start without them.
  secrets = merge({
    gerrit-user = {
      env       = var.gerrit_user_env
      functions = keys(local.functions)
    }
    gerrit-password = {
      env       = var.gerrit_password_env
      functions = keys(local.functions)
    }
    webhook-token = {
      env       = "TOLLGATE_WEBHOOK_TOKEN"
      functions = ["gerrit_webhook"]
    }
    enroll-secret = {
      env       = "TOLLGATE_ENROLL_SECRET"
      functions = ["worker_api"]
    }
    }, {
    for k, v in {
      api-tokens = {
        env       = var.ui_api_tokens_env
        functions = ["api"]
      }
    } : k => v if v.env != ""
  })

  # Function => the secrets it reads.
  function_secrets = {
    for f in keys(local.functions) : f => [for s, v in local.secrets : s if contains(v.functions, f)]
  }
}

resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  secret_id = "${var.prefix}-${each.key}"
  replication {
    auto {}
  }
  depends_on = [google_project_service.api]
}
