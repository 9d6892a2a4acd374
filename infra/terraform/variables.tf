variable "project" {
  description = "The Google Cloud project that runs Tollgate."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a Google Cloud project id."
  }
}

variable "region" {
  description = "The region of Cloud Run, Cloud Scheduler, the buckets and the worker fleet."
  type        = string
  default     = "us-central1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1."
  }
}

variable "firestore_location" {
  description = "The location of the Firestore database (a region or a multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "prefix" {
  description = "Prefix of every resource name, and the Pub/Sub topic prefix (TOLLGATE_TOPIC_PREFIX)."
  type        = string
  default     = "tollgate"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.prefix))
    error_message = "prefix must be 1 to 20 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "image" {
  description = "The functions image: the default target of the repository's Dockerfile (functions/cmd/tollgate-functions), e.g. REGION-docker.pkg.dev/PROJECT/tollgate/functions:TAG as cloudbuild.yaml pushes it. Every function runs it with its own FUNCTION_TARGET."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/[^ ]+$", var.image))
    error_message = "image must be a container image reference such as us-central1-docker.pkg.dev/PROJECT/tollgate/functions:TAG."
  }
}

variable "config_file" {
  description = "Path (from the directory terraform runs in) of the Tollgate YAML config, which Terraform uploads to gs://{config bucket}/{config_object}. A change rolls out new function revisions and worker VMs."
  type        = string
  validation {
    condition     = length(var.config_file) > 0
    error_message = "config_file must name the config file."
  }
}

variable "rollout" {
  description = "Any label value (lowercase letters, digits, '-' or '_'); changing it rolls out a new revision of every function, which reads the secrets again (after a rotation, infra/README.md)."
  type        = string
  default     = "1"
  validation {
    condition     = can(regex("^[a-z0-9_-]{1,63}$", var.rollout))
    error_message = "rollout must be 1 to 63 lowercase letters, digits, '-' or '_'."
  }
}

variable "config_object" {
  description = "Object name of the Tollgate YAML config in the config bucket; TOLLGATE_CONFIG is gs://{config bucket}/{config_object}."
  type        = string
  default     = "tollgate.yaml"
}

variable "max_delivery_attempts" {
  description = "Deliveries of a task before Pub/Sub moves it to the dead-letter topic (tasks.max_attempts); Pub/Sub allows 5 to 100."
  type        = number
  default     = 5
  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "event_max_age" {
  description = "TOLLGATE_EVENT_MAX_AGE: events older than this are dropped, not retried (a Go duration)."
  type        = string
  default     = "1h"
  validation {
    condition     = can(regex("^([0-9]+(ns|us|ms|s|m|h))+$", var.event_max_age))
    error_message = "event_max_age must be a Go duration such as 1h or 90m."
  }
}

variable "log_level" {
  description = "TOLLGATE_LOG_LEVEL of the functions."
  type        = string
  default     = "info"
  validation {
    condition     = contains(["debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level must be debug, info, warn or error."
  }
}

variable "worker_channel" {
  description = "TOLLGATE_CHANNEL: the worker API channel."
  type        = number
  default     = 0
  validation {
    condition     = var.worker_channel >= 0 && floor(var.worker_channel) == var.worker_channel
    error_message = "worker_channel must be a non-negative integer."
  }
}

variable "postsubmit_branches" {
  description = "Branches Cloud Scheduler queues postsubmit jobs for, every postsubmit_schedule."
  type        = list(string)
  default     = ["main"]
}

variable "postsubmit_schedule" {
  description = "Cron schedule of queue_postsubmit_jobs."
  type        = string
  default     = "0 */4 * * *"
}

variable "log_retention_days" {
  description = "Days after which objects of the logs and artifacts bucket are deleted (the lifecycle rule)."
  type        = number
  default     = 90
  validation {
    condition     = var.log_retention_days >= 1
    error_message = "log_retention_days must be at least 1."
  }
}

variable "cache_safety_net_days" {
  description = "Days since an artifact cache object's Custom-Time (its last use) after which the bucket deletes it, should cache_cleanup stop running."
  type        = number
  default     = 30
  validation {
    condition     = var.cache_safety_net_days >= 1
    error_message = "cache_safety_net_days must be at least 1."
  }
}

variable "function_overrides" {
  description = "Per-function settings over the defaults (memory, timeout_seconds, concurrency, max_instances), keyed by function name."
  type = map(object({
    memory          = optional(string)
    timeout_seconds = optional(number)
    concurrency     = optional(number)
    max_instances   = optional(number)
  }))
  default = {}
  validation {
    condition     = alltrue([for o in values(var.function_overrides) : o.timeout_seconds == null || (o.timeout_seconds >= 1 && o.timeout_seconds <= 3600)])
    error_message = "timeout_seconds must be between 1 and 3600."
  }
}

variable "gerrit_user_env" {
  description = "The config's gerrit.user_env: the variable the functions get the Gerrit HTTP user in (from Secret Manager)."
  type        = string
  default     = "GERRIT_USER"
  validation {
    condition     = can(regex("^[A-Z_][A-Z0-9_]*$", var.gerrit_user_env)) && !startswith(var.gerrit_user_env, "TOLLGATE_")
    error_message = "gerrit_user_env must be an environment variable name not starting with TOLLGATE_."
  }
}

variable "gerrit_password_env" {
  description = "The config's gerrit.password_env: the variable the functions get the Gerrit HTTP password in (from Secret Manager)."
  type        = string
  default     = "GERRIT_PASSWORD"
  validation {
    condition     = can(regex("^[A-Z_][A-Z0-9_]*$", var.gerrit_password_env)) && !startswith(var.gerrit_password_env, "TOLLGATE_")
    error_message = "gerrit_password_env must be an environment variable name not starting with TOLLGATE_."
  }
}

variable "worker_binary_file" {
  description = "Path of a linux/amd64 `tollgate` binary (CGO_ENABLED=0 go build ./cmd/tollgate) that Terraform uploads and the worker VMs run as `tollgate worker --backend gcp`. Empty: no worker fleet."
  type        = string
  default     = ""
}

variable "worker_network" {
  description = "VPC network of the worker VMs (they need to reach Google APIs, Gerrit and whatever the jobs fetch)."
  type        = string
  default     = "default"
}

variable "worker_labels" {
  description = "Labels every worker advertises (tollgate worker --labels), as k=v,k=v: what job types' require is matched against."
  type        = string
  default     = ""
  validation {
    condition     = can(regex("^([A-Za-z0-9_.-]+=[A-Za-z0-9_.:/-]*(,[A-Za-z0-9_.-]+=[A-Za-z0-9_.:/-]*)*)?$", var.worker_labels))
    error_message = "worker_labels must be k=v pairs separated by commas (letters, digits, '_', '.', '-'; values also ':' and '/')."
  }
}

variable "worker_gerrit_credentials" {
  description = "Whether workers fetch changes with the Gerrit credentials of Secret Manager (their account may then read the two Gerrit secrets); off: anonymous fetches."
  type        = bool
  default     = false
}

variable "worker_rollout" {
  description = "How a new worker template (binary, config, settings) reaches running VMs: PROACTIVE replaces them (their running jobs end INTERRUPTED and are queued again once), OPPORTUNISTIC only gives it to VMs created later."
  type        = string
  default     = "PROACTIVE"
  validation {
    condition     = contains(["PROACTIVE", "OPPORTUNISTIC"], var.worker_rollout)
    error_message = "worker_rollout must be PROACTIVE or OPPORTUNISTIC."
  }
}

variable "worker_machine_type" {
  description = "Machine type of the worker VMs."
  type        = string
  default     = "e2-standard-4"
}

variable "worker_zone" {
  description = "Zone of the worker managed instance group (in var.region)."
  type        = string
  default     = "us-central1-a"
}

variable "worker_disk_gb" {
  description = "Boot disk size of a worker VM, in GB."
  type        = number
  default     = 100
  validation {
    condition     = var.worker_disk_gb >= 10
    error_message = "worker_disk_gb must be at least 10."
  }
}

variable "workers_min" {
  description = "The fewest worker VMs the autoscaler keeps."
  type        = number
  default     = 0
  validation {
    condition     = var.workers_min >= 0
    error_message = "workers_min must not be negative."
  }
}

variable "workers_max" {
  description = "The most worker VMs the autoscaler starts."
  type        = number
  default     = 10
  validation {
    condition     = var.workers_max >= 1
    error_message = "workers_max must be at least 1."
  }
}

variable "jobs_per_vm" {
  description = "Worker processes per VM (jobs a VM runs at once), which is also the autoscaler's target of ci_job_queue_len (queued + running jobs) per VM."
  type        = number
  default     = 1
  validation {
    condition     = var.jobs_per_vm >= 1 && var.jobs_per_vm <= 32 && floor(var.jobs_per_vm) == var.jobs_per_vm
    error_message = "jobs_per_vm must be an integer from 1 to 32."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids the alerts notify."
  type        = list(string)
  default     = []
}

variable "alert_queue_time_seconds" {
  description = "Alert when the 95th percentile of ci_job_queue_time exceeds this many seconds for 15 minutes (see alerts.tf for the default's reasoning)."
  type        = number
  default     = 900
  validation {
    condition     = var.alert_queue_time_seconds > 0
    error_message = "alert_queue_time_seconds must be positive."
  }
}

variable "ui_api_tokens_env" {
  description = "The config's ui.api_tokens_env, if set: the api function gets the JSON API tokens in this variable, from the secret {prefix}-api-tokens. Empty: no API tokens."
  type        = string
  default     = ""
  validation {
    condition     = var.ui_api_tokens_env == "" || (can(regex("^[A-Z_][A-Z0-9_]*$", var.ui_api_tokens_env)) && !startswith(var.ui_api_tokens_env, "TOLLGATE_"))
    error_message = "ui_api_tokens_env must be empty or an environment variable name not starting with TOLLGATE_."
  }
}
