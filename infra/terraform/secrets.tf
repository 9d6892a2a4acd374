# Secret Manager secrets. Terraform creates the secrets, not their values:
# add a version of each with gcloud (see infra/README.md), so no secret
# value is ever in Terraform state.
locals {
  # Secret id suffix => the environment variable the functions read it from
  # and the functions that get it (iam.tf grants each of them access).
  # Only the actions that call Gerrit (controller.GerritActions) get its
  # credentials; the other functions run without a Gerrit client.
  secrets = merge({
    gerrit-user = {
      env       = var.gerrit_user_env
      functions = local.gerrit_actions
    }
    gerrit-password = {
      env       = var.gerrit_password_env
      functions = local.gerrit_actions
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

  # controller.GerritActions (infra_test checks they agree).
  gerrit_actions = ["check_new_cls", "check_new_cl", "comment_and_vote", "queue_postsubmit_jobs"]

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
