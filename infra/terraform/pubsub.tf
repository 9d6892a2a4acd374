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

  # A plain push (no no_wrapper block): the body is the envelope
  # {"message": {data, attributes, messageId, publishTime}, "subscription"}.
  # functions-framework-go turns it into a CloudEvent whose data is
  # {"message": {...}}, and the functions decode only message.* (adapters/
  # pubsub ParseEventData). It takes the topic from the request path, which
  # must therefore contain projects/P/topics/T (else it logs a warning and
  # the event has no topic); the path is ignored otherwise, since a service
  # serves its one function at every path.
  push_config {
    push_endpoint = "${google_cloud_run_v2_service.function[each.key].uri}/projects/${var.project}/topics/${local.topic_name[each.key]}"
    oidc_token {
      service_account_email = google_service_account.pubsub_invoker.email
      # The service URL: Cloud Run checks the token's audience.
      audience = google_cloud_run_v2_service.function[each.key].uri
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
