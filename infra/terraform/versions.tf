# Tollgate on Google Cloud: Pub/Sub, Cloud Run functions, Cloud Scheduler,
# Firestore, Cloud Storage, Secret Manager and Cloud Monitoring.
# infra/infra_test.go checks these files against the code.

terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}
