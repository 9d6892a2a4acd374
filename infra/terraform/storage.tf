resource "google_storage_bucket" "config" {
  name                        = "${var.project}-${var.prefix}-config"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
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
