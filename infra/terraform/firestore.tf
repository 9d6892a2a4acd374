resource "google_firestore_database" "db" {
  name                    = "(default)"
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  deletion_policy         = "ABANDON"
  depends_on              = [google_project_service.api]
}

locals {
  # The composite indexes of adapters/firestore Indexes(), each field as
  # "path ORDER" (checked by infra_test.go).
  firestore_indexes = [
    { collection = "jobs", fields = ["pool ASCENDING", "state ASCENDING", "priority ASCENDING", "order ASCENDING", "id ASCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "state ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "state ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "state ASCENDING", "worker ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "state ASCENDING", "worker ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "worker ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["src ASCENDING", "worker ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "time_ended DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "time_queued ASCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "time_started DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "worker ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["state ASCENDING", "worker ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["time_ended DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "jobs", fields = ["time_started DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["worker ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "jobs", fields = ["worker ASCENDING", "time_queued DESCENDING", "id DESCENDING", "time_started DESCENDING"] },
    { collection = "patchsets", fields = ["change ASCENDING", "ended ASCENDING", "owner ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["change ASCENDING", "ended ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["change ASCENDING", "owner ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["change ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["ended ASCENDING", "owner ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["ended ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["owner ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "patchsets", fields = ["time_queued DESCENDING", "id DESCENDING"] },
    { collection = "postsubmits", fields = ["branch ASCENDING", "time_queued DESCENDING", "id DESCENDING"] },
    { collection = "postsubmits", fields = ["time_queued DESCENDING", "id DESCENDING"] },
    { collection = "samples", fields = ["name ASCENDING", "t DESCENDING"] },
  ]

  # adapters/firestore FieldOverrides(): TTL policies and single-field
  # index exemptions (checked by infra_test.go).
  firestore_field_overrides = [
    { collection = "logs", field = "expire_at", ttl = true, no_index = false },
    { collection = "chunks", field = "expire_at", ttl = true, no_index = true },
    { collection = "chunks", field = "data", ttl = false, no_index = true },
    { collection = "jobs", field = "data", ttl = false, no_index = true },
    { collection = "patchsets", field = "data", ttl = false, no_index = true },
    { collection = "postsubmits", field = "data", ttl = false, no_index = true },
    { collection = "workers", field = "data", ttl = false, no_index = true },
    { collection = "meta", field = "value", ttl = false, no_index = true },
    { collection = "samples", field = "value", ttl = false, no_index = true },
  ]
}

resource "google_firestore_index" "index" {
  for_each    = { for x in local.firestore_indexes : "${x.collection}(${join(", ", x.fields)})" => x }
  database    = google_firestore_database.db.name
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = split(" ", fields.value)[0]
      order      = split(" ", fields.value)[1]
    }
  }
}

resource "google_firestore_field" "override" {
  for_each   = { for o in local.firestore_field_overrides : "${o.collection}.${o.field}" => o }
  database   = google_firestore_database.db.name
  collection = each.value.collection
  field      = each.value.field

  dynamic "ttl_config" {
    for_each = each.value.ttl ? [1] : []
    content {}
  }

  # An empty index_config exempts the field from single-field indexes.
  dynamic "index_config" {
    for_each = each.value.no_index ? [1] : []
    content {}
  }
}
