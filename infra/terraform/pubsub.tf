# One topic per action ({prefix}-{action}, as adapters/pubsub names them),
# each with a push subscription to its function: retries with backoff and a
# dead-letter policy of var.max_delivery_attempts deliveries.

resource "google_pubsub_topic" "action" {
  for_each   = toset(local.actions)
  name       = local.topic_name[each.key]
  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "dead_letter" {
  name       = local.dead_letter_topic
  depends_on = [google_project_service.api]
}

# Keeps dead letters so that the API's dead-letter view
# (adapters/pubsub ListDead) can read them without acknowledging any.
resource "google_pubsub_subscription" "dead_letter_view" {
  name                       = "${local.dead_letter_topic}-view"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "push" {
  for_each             = toset(local.actions)
  name                 = "${local.topic_name[each.key]}-push"
  topic                = google_pubsub_topic.action[each.key].id
  ack_deadline_seconds = 600

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.function[each.key].uri}/projects/${var.project}/topics/${local.topic_name[each.key]}"
    oidc_token {
      service_account_email = google_service_account.pubsub_invoker.email
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's service agent forwards dead letters: it must publish to the
# dead-letter topic and acknowledge on the source subscriptions.
locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = toset(local.actions)
  subscription = google_pubsub_subscription.push[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The push subscriptions sign their requests as this account, which alone
# may invoke the CloudEvent functions.
resource "google_service_account" "pubsub_invoker" {
  account_id   = "${var.prefix}-pubsub-push"
  display_name = "Tollgate Pub/Sub push"
}

resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.pubsub_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# Every function publishes tasks to every action topic (the controller fans
# out) and the API reads and republishes dead letters.
resource "google_pubsub_topic_iam_member" "function_publisher" {
  for_each = merge([
    for f in keys(local.functions) : { for a in local.actions : "${f}/${a}" => { function = f, action = a } }
  ]...)
  topic  = google_pubsub_topic.action[each.value.action].id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_pubsub_subscription_iam_member" "api_dead_letter_view" {
  subscription = google_pubsub_subscription.dead_letter_view.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.function["api"].email}"
}

# The push side buries tasks itself when Pub/Sub does not report the
# delivery attempt (adapters/pubsub Bury).
resource "google_pubsub_topic_iam_member" "function_dead_letter" {
  for_each = toset(local.actions)
  topic    = google_pubsub_topic.dead_letter.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}
