# The worker fleet: VMs that run `tollgate worker --backend gcp` (Firestore,
# Pub/Sub and Cloud Storage directly), in a managed instance group scaled on
# ci_job_queue_len. Created only when var.worker_binary is set.

locals {
  fleet = var.worker_binary == "" ? {} : { workers = true }
}

resource "google_service_account" "worker" {
  account_id   = "${var.prefix}-worker"
  display_name = "Tollgate worker VMs"
}

resource "google_project_iam_member" "worker" {
  for_each = toset([
    "roles/datastore.user",
    "roles/monitoring.metricWriter",
    "roles/logging.logWriter",
  ])
  project = var.project
  role    = each.value
  member  = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_pubsub_topic_iam_member" "worker_publisher" {
  for_each = toset(local.actions)
  topic    = google_pubsub_topic.action[each.key].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "worker" {
  for_each = {
    blobs  = google_storage_bucket.blobs.name
    cache  = google_storage_bucket.cache.name
    config = google_storage_bucket.config.name
  }
  bucket = each.value
  role   = each.key == "config" ? "roles/storage.objectViewer" : "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_compute_instance_template" "worker" {
  for_each     = local.fleet
  name_prefix  = "${var.prefix}-worker-"
  machine_type = var.worker_machine_type
  region       = var.region

  disk {
    source_image = "debian-cloud/debian-12"
    disk_size_gb = var.worker_disk_gb
    boot         = true
    auto_delete  = true
  }

  network_interface {
    network = "default"
    access_config {}
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"]
  }

  metadata = {
    startup-script = <<-EOT
      #!/bin/bash
      set -euo pipefail
      gcloud storage cp '${var.worker_binary}' /usr/local/bin/tollgate
      chmod 755 /usr/local/bin/tollgate
      cat > /etc/systemd/system/tollgate-worker.service <<'UNIT'
      [Unit]
      Description=Tollgate worker
      After=network-online.target
      [Service]
      Environment=TOLLGATE_PROJECT=${var.project}
      Environment=TOLLGATE_CONFIG=gs://${google_storage_bucket.config.name}/${var.config_object}
      Environment=TOLLGATE_BLOB_BUCKET=${google_storage_bucket.blobs.name}
      Environment=TOLLGATE_TOPIC_PREFIX=${var.prefix}
      ExecStart=/usr/local/bin/tollgate worker --backend gcp --labels '${var.worker_labels}'
      Restart=always
      RestartSec=10
      [Install]
      WantedBy=multi-user.target
      UNIT
      systemctl daemon-reload
      systemctl enable --now tollgate-worker
    EOT
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_project_service.api]
}

resource "google_compute_instance_group_manager" "worker" {
  for_each           = local.fleet
  name               = "${var.prefix}-workers"
  zone               = var.worker_zone
  base_instance_name = "${var.prefix}-worker"

  version {
    instance_template = google_compute_instance_template.worker[each.key].id
  }
}

# Scales on the queue: ci_job_queue_len is one value for the whole
# deployment, so each VM is assigned var.jobs_per_worker of it.
resource "google_compute_autoscaler" "worker" {
  for_each = local.fleet
  name     = "${var.prefix}-workers"
  zone     = var.worker_zone
  target   = google_compute_instance_group_manager.worker[each.key].id

  autoscaling_policy {
    min_replicas    = var.workers_min
    max_replicas    = var.workers_max
    cooldown_period = 120

    metric {
      name                       = "${local.metric_prefix}ci_job_queue_len"
      filter                     = "resource.type = \"global\""
      single_instance_assignment = var.jobs_per_worker
    }

    scale_in_control {
      time_window_sec = 600
      max_scaled_in_replicas {
        fixed = 2
      }
    }
  }
}
