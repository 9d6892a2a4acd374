#!/usr/bin/env bash
# Prints the import paths of the packages whose tests need the Google Cloud
# CLI with its Firestore and Pub/Sub emulators: those whose tests import
# emulators/gcloud (or its gcloudtest) or emulators/launcher, and
# emulators/gcloud itself. cloudbuild.yaml runs these in the google-cloud-cli
# image and every other package in golang:1.26.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  grep -rl --include='*_test.go' \
    -e '"github.com/tollgate-ci/tollgate/emulators/gcloud' \
    -e '"github.com/tollgate-ci/tollgate/emulators/launcher"' . | xargs -n1 dirname
  echo ./emulators/gcloud
} | sort -u | xargs go list
