# Service accounts and every IAM grant of the deployment, least privilege:
# each identity gets only what its code calls, on only the resources it
# touches. infra_test.go derives the needs from the Go code (the actions each
# function defers, the buckets it reads or writes) and checks them against
# the locals below, and that no project-wide owner/editor/viewer role, and
# no authoritative (binding/policy) resource, is ever used.
#
# Identities:
#   {prefix}-fn-{function}  one per Cloud Run service (local.functions)
#   {prefix}-pubsub-push    signs the push subscriptions' requests (OIDC)
#   {prefix}-scheduler      Cloud Scheduler's publisher
#   {prefix}-worker         the worker VMs
# plus Google's Pub/Sub service agent, which forwards dead letters and mints
# the push tokens.

locals {
  # The topics each function publishes to: the actions its code defers.
  # Actions: what controller.Handle runs for the action (core/controller);
  # gerrit_webhook: functions/webhook; api: functions/api and functions/ui
  # (cancelling a job ends it: controller.CancelJob); worker_api: core/fleet
  # (a job's end: controller.JobEnded).
  publishes = {
    tick                  = ["check_new_cls", "check_pending_cls", "update_queue_metrics", "reap_dead_workers", "delete_stale_jobs", "delete_expired_logs", "cache_cleanup", "queue_postsubmit_jobs"]
    check_new_cls         = ["check_new_cl"]
    check_new_cl          = ["cancel_older_jobs", "comment_and_vote"]
    cancel_older_jobs     = ["check_pending_cl"]
    check_pending_cls     = ["check_pending_cl"]
    check_pending_cl      = ["update_cl_metrics", "update_job_metrics", "comment_and_vote"]
    comment_and_vote      = []
    queue_postsubmit_jobs = []
    cancel_job            = ["check_pending_cl", "update_job_metrics"]
    delete_stale_jobs     = ["check_pending_cl", "update_job_metrics"]
    reap_dead_workers     = ["check_pending_cl", "update_job_metrics"]
    delete_expired_logs   = ["delete_job_logs"]
    delete_job_logs       = []
    update_cl_metrics     = []
    update_job_metrics    = []
    update_queue_metrics  = []
    cache_cleanup         = []
    gerrit_webhook        = ["check_new_cl"]
    api                   = ["check_pending_cl", "update_job_metrics"]
    worker_api            = ["check_pending_cl", "update_job_metrics"]
  }

  # The worker VMs defer what follows a job's end (core/fleet Finish ->
  # controller.JobEnded), so the vote does not wait for the next tick.
  worker_publishes = ["check_pending_cl", "update_job_metrics"]

  # What Cloud Scheduler publishes (scheduler.tf).
  scheduler_publishes = distinct([for s in merge(local.schedules, local.postsubmit_schedules) : s.action])

  # Buckets besides the config object: function => bucket => role.
  # objectViewer reads (the API serves artifacts), objectUser also writes
  # and deletes (the worker API stores artifacts and serves the cache;
  # cache_cleanup evicts). No action touches the artifacts: logs live in
  # Firestore and the bucket's lifecycle rule deletes artifacts.
  function_buckets = {
    api           = { blobs = "roles/storage.objectViewer" }
    worker_api    = { blobs = "roles/storage.objectUser", cache = "roles/storage.objectUser" }
    cache_cleanup = { cache = "roles/storage.objectUser" }
  }
  bucket_names = {
    blobs = google_storage_bucket.blobs.name
    cache = google_storage_bucket.cache.name
  }

  # Functions that write metrics: every action (functions/events counts the
  # retries and dead letters of each delivery, the Gerrit client its calls).
  # The HTTP functions write none; they only try to create the descriptors
  # at start, which Terraform already did (a warning, not an error).
  metric_writers = local.actions

  # Project-wide roles, the only ones any identity here holds: Firestore has
  # no finer grant than the database's project, Cloud Monitoring none at all.
  project_roles = ["roles/datastore.user", "roles/monitoring.metricWriter"]

  # The config object (and the worker binary) only, not the whole bucket.
  config_object_condition = "resource.name == \"projects/_/buckets/${google_storage_bucket.config.name}/objects/${var.config_object}\""
}

# --- The functions -----------------------------------------------------

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = substr("${var.prefix}-fn-${replace(each.key, "_", "-")}", 0, 30)
  display_name = "Tollgate function ${each.key}"
}

# Firestore: every function reads or writes the state.
resource "google_project_iam_member" "function_datastore" {
  for_each = local.functions
  project  = var.project
  role     = "roles/datastore.user"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

resource "google_project_iam_member" "function_metrics" {
  for_each = toset(local.metric_writers)
  project  = var.project
  role     = "roles/monitoring.metricWriter"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Every function reads the config at its first call (functions/cloudrun
# Build): that object, nothing else of the bucket.
resource "google_storage_bucket_iam_member" "function_config" {
  for_each = local.functions
  bucket   = google_storage_bucket.config.name
  role     = "roles/storage.objectViewer"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
  condition {
    title      = "config-object"
    expression = local.config_object_condition
  }
}

resource "google_storage_bucket_iam_member" "function_bucket" {
  for_each = merge([
    for f, bs in local.function_buckets : { for b, role in bs : "${f}/${b}" => { function = f, bucket = b, role = role } }
  ]...)
  bucket = local.bucket_names[each.value.bucket]
  role   = each.value.role
  member = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

resource "google_pubsub_topic_iam_member" "function_publisher" {
  for_each = merge([
    for f, targets in local.publishes : { for a in targets : "${f}/${a}" => { function = f, action = a } }
  ]...)
  topic  = google_pubsub_topic.action[each.value.action].id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# An action's function buries a task itself when it can never succeed or
# had its last attempt (adapters/pubsub Settle and Bury).
resource "google_pubsub_topic_iam_member" "function_dead_letter" {
  for_each = toset(local.actions)
  topic    = google_pubsub_topic.dead_letter.id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# The API lists dead letters: it pulls from the view subscription and hands
# every message back (adapters/pubsub ListDead).
resource "google_pubsub_subscription_iam_member" "api_dead_letter_view" {
  subscription = google_pubsub_subscription.dead_letter_view.id
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.function["api"].email}"
}

# Each function reads the secrets it is given (local.function_secrets).
resource "google_secret_manager_secret_iam_member" "function" {
  for_each = merge([
    for f, ss in local.function_secrets : { for s in ss : "${f}/${s}" => { function = f, secret = s } }
  ]...)
  secret_id = google_secret_manager_secret.secret[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# --- Who may call the functions ----------------------------------------

# The push subscriptions sign their requests as this account, which alone
# may invoke the CloudEvent functions, each on its own service only.
resource "google_service_account" "pubsub_invoker" {
  account_id   = "${var.prefix}-pubsub-push"
  display_name = "Tollgate Pub/Sub push"
}

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

# --- The Pub/Sub service agent -----------------------------------------

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

# It mints the push requests' OIDC tokens as the invoker account...
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.pubsub_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# ...and forwards dead letters: publish on the dead-letter topic, acknowledge
# on the source subscriptions.
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

# --- Cloud Scheduler ---------------------------------------------------

# The scheduler jobs publish through the Pub/Sub API as this account (an
# HTTP target with an OAuth token, see scheduler.tf), which may publish to
# the scheduled actions' topics and nothing else.
resource "google_service_account" "scheduler" {
  account_id   = "${var.prefix}-scheduler"
  display_name = "Tollgate Cloud Scheduler"
}

resource "google_pubsub_topic_iam_member" "scheduler_publisher" {
  for_each = toset(local.scheduler_publishes)
  topic    = google_pubsub_topic.action[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# --- The worker VMs ----------------------------------------------------

# What `tollgate worker --backend gcp` calls (functions/cloudrun BuildFleet,
# core/fleet): the Firestore queue, the artifacts and cache buckets, the
# config object and its own binary, and the topics of a job's end. It
# writes no metrics (BuildFleet opens none) and never talks to Gerrit's
# REST API; it reads the Gerrit credentials for checkouts only when
# var.worker_gerrit_credentials is on.
resource "google_service_account" "worker" {
  account_id   = "${var.prefix}-worker"
  display_name = "Tollgate worker VMs"
}

resource "google_project_iam_member" "worker_datastore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "worker_config" {
  bucket = google_storage_bucket.config.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.worker.email}"
  condition {
    title      = "config-and-binary"
    expression = "${local.config_object_condition} || resource.name == \"projects/_/buckets/${google_storage_bucket.config.name}/objects/${local.worker_binary_object}\""
  }
}

resource "google_storage_bucket_iam_member" "worker_bucket" {
  for_each = toset(["blobs", "cache"])
  bucket   = local.bucket_names[each.key]
  role     = "roles/storage.objectUser"
  member   = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_pubsub_topic_iam_member" "worker_publisher" {
  for_each = toset(local.worker_publishes)
  topic    = google_pubsub_topic.action[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_secret_manager_secret_iam_member" "worker_gerrit" {
  for_each  = toset(var.worker_gerrit_credentials ? ["gerrit-user", "gerrit-password"] : [])
  secret_id = google_secret_manager_secret.secret[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.worker.email}"
}
