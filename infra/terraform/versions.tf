# Tollgate on Google Cloud: Pub/Sub, Cloud Run functions, Cloud Scheduler,
# Firestore, Cloud Storage, Secret Manager and Cloud Monitoring.
# infra/infra_test.go checks these files against the code.

terraform {
  required_version = ">= 1.6"

  # The state lives in a bucket you create once (infra/README.md, "Deploy
  # from zero"), shared by operators and Cloud Build:
  #   terraform init -backend-config=bucket=BUCKET -backend-config=prefix=tollgate/state
  backend "gcs" {}

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
