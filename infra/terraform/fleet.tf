# The worker fleet: VMs that run `tollgate worker --backend gcp` (Firestore,
# Pub/Sub and Cloud Storage directly, jobs in bubblewrap's sandbox), in a
# managed instance group scaled on ci_job_queue_len. Created only when
# var.worker_binary_file is set. The service account and its grants are in
# iam.tf.
#
# First apply: the VMs need the binary and the config at boot. Both are
# objects Terraform uploads (storage.tf), and the template names them, so
# Terraform creates them, and the worker's grants, before the group starts
# any VM.

locals {
  fleet = var.worker_binary_file == "" ? {} : { workers = true }

  # --grace of the workers, and how long systemd waits for a worker to end
  # its job INTERRUPTED on shutdown: --grace for the job's processes, 10 s
  # for the log's end and the report (core/worker shutdownBudget), and a
  # margin, well inside Compute Engine's shutdown period (about 90 s for
  # standard VMs, 30 s for Spot VMs).
  worker_grace_seconds        = 10
  worker_stop_timeout_seconds = 45
}

resource "google_compute_instance_template" "worker" {
  for_each     = local.fleet
  name_prefix  = "${var.prefix}-worker-"
  machine_type = var.worker_machine_type
  region       = var.region

  disk {
    source_image = "debian-cloud/debian-12"
    disk_size_gb = var.worker_disk_gb
    disk_type    = "pd-balanced"
    boot         = true
    auto_delete  = true
  }

  network_interface {
    network = var.worker_network
    access_config {}
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot = true
  }

  metadata = {
    startup-script = templatefile("${path.module}/worker-startup.sh.tftpl", {
      jobs_per_vm            = var.jobs_per_vm
      binary_url             = "gs://${google_storage_bucket.config.name}/${local.worker_binary_object}"
      project                = var.project
      config_url             = "gs://${google_storage_bucket.config.name}/${var.config_object}"
      blobs_bucket           = google_storage_bucket.blobs.name
      prefix                 = var.prefix
      labels                 = var.worker_labels
      grace                  = "${local.worker_grace_seconds}s"
      stop_timeout_seconds   = local.worker_stop_timeout_seconds
      gerrit_credentials     = var.worker_gerrit_credentials
      gerrit_user_secret     = "${var.prefix}-gerrit-user"
      gerrit_password_secret = "${var.prefix}-gerrit-password"
    })
    # What the VMs run: a new binary or config makes a new template, which
    # the group rolls out (update_policy below).
    tollgate-binary-md5 = google_storage_bucket_object.worker_binary[each.key].md5hash
    tollgate-config-md5 = local.config_md5
    enable-oslogin      = "TRUE"
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [
    google_project_service.api,
    google_storage_bucket_object.config,
    google_storage_bucket_iam_member.worker_config,
    google_storage_bucket_iam_member.worker_bucket,
    google_project_iam_member.worker_datastore,
    google_pubsub_topic_iam_member.worker_publisher,
    google_secret_manager_secret_iam_member.worker_gerrit,
  ]
}

resource "google_compute_instance_group_manager" "worker" {
  for_each           = local.fleet
  name               = "${var.prefix}-workers"
  zone               = var.worker_zone
  base_instance_name = "${var.prefix}-worker"

  version {
    instance_template = google_compute_instance_template.worker[each.key].id
  }

  # A new template (binary, config, settings) replaces the VMs: new ones
  # first (max_surge), then the old ones are deleted, whose running jobs end
  # INTERRUPTED and are queued again once. "OPPORTUNISTIC" leaves running
  # VMs alone (only new VMs get the template): gentler on jobs, but VMs
  # keep the old config, so a job of a new job type they claim fails.
  update_policy {
    type                  = var.worker_rollout
    minimal_action        = "REPLACE"
    replacement_method    = "SUBSTITUTE"
    max_surge_fixed       = 3
    max_unavailable_fixed = 0
  }
}

# Scales on the queue: ci_job_queue_len (queued + running jobs, written
# each tick by update_queue_metrics to the global resource) is one value
# for the whole deployment, so it is a per-group metric and each VM is
# assigned var.jobs_per_vm of it, the number of worker processes a VM runs:
# every queued job gets a slot.
#
# Scale-in deletes VMs the group picks, which may be busy: their jobs end
# INTERRUPTED and are queued again once (a second interruption is final
# and the vote names it an infrastructure failure). scale_in_control limits
# that churn to 2 VMs per 10 minutes.
resource "google_compute_autoscaler" "worker" {
  for_each = local.fleet
  name     = "${var.prefix}-workers"
  zone     = var.worker_zone
  target   = google_compute_instance_group_manager.worker[each.key].id

  autoscaling_policy {
    min_replicas = var.workers_min
    max_replicas = var.workers_max
    # A new VM installs git and bubblewrap and fetches the binary first.
    cooldown_period = 120

    metric {
      name                       = "${local.metric_prefix}ci_job_queue_len"
      filter                     = "resource.type = \"global\""
      single_instance_assignment = var.jobs_per_vm
    }

    scale_in_control {
      time_window_sec = 600
      max_scaled_in_replicas {
        fixed = 2
      }
    }
  }
}
