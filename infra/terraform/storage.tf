# The config and the worker binary. Versioned, so a bad config can be
# rolled back (gcloud storage ls -a); old versions beyond the last ten go.
resource "google_storage_bucket" "config" {
  name                        = "${var.project}-${var.prefix}-config"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      num_newer_versions = 10
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
}

# The Tollgate config (TOLLGATE_CONFIG), uploaded from var.config_file: it
# exists before any function, scheduler job or worker reads it, and its MD5
# rolls out new function revisions and worker VMs when it changes
# (functions and workers read it once, when they start).
resource "google_storage_bucket_object" "config" {
  bucket       = google_storage_bucket.config.name
  name         = var.config_object
  source       = var.config_file
  content_type = "application/yaml"

  lifecycle {
    # The api service is public (it authenticates its callers itself), so
    # anyone could send IAP's identity header: trusting it needs IAP in
    # front and the service's ingress closed to everything else, which
    # this deployment does not set up.
    precondition {
      condition     = !can(regex("trust_iap\\s*:\\s*(true|yes|on)", file(var.config_file)))
      error_message = "ui.trust_iap is on in the config, but the api service is reachable without IAP: use ui.api_tokens_env instead (infra/README.md)."
    }
  }
}

# The worker binary, uploaded from var.worker_binary_file (fleet.tf).
resource "google_storage_bucket_object" "worker_binary" {
  for_each     = local.fleet
  bucket       = google_storage_bucket.config.name
  name         = local.worker_binary_object
  source       = var.worker_binary_file
  content_type = "application/octet-stream"
}

locals {
  config_md5           = filemd5(var.config_file)
  worker_binary_object = "bin/tollgate"
}

# Logs and artifacts (TOLLGATE_BLOB_BUCKET).
resource "google_storage_bucket" "blobs" {
  name                        = "${var.project}-${var.prefix}-artifacts"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  lifecycle_rule {
    condition {
      age = var.log_retention_days
    }
    action {
      type = "Delete"
    }
  }
}

# The artifact cache (the config's cache.bucket). cache_cleanup evicts by
# Custom-Time within cache.quota; soft delete would keep (and bill) every
# evicted object, so it is off. The daysSinceCustomTime rule is only a
# safety net should cache_cleanup stop running.
resource "google_storage_bucket" "cache" {
  name                        = "${var.project}-${var.prefix}-cache"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  soft_delete_policy {
    retention_duration_seconds = 0
  }

  lifecycle_rule {
    condition {
      days_since_custom_time = var.cache_safety_net_days
    }
    action {
      type = "Delete"
    }
  }
}
