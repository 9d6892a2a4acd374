# Tollgate's container images, built from the repository root:
#
#   docker build -t IMAGE .                      # the functions image (default target)
#   docker build --target worker -t IMAGE-worker .
#
# functions: functions/cmd/tollgate-functions on a distroless base, as
#   nonroot. Every Cloud Run service of infra/terraform runs it (var.image),
#   each told its function by FUNCTION_TARGET; it listens on $PORT.
# worker: `tollgate` (./cmd/tollgate) with git and bubblewrap, which jobs
#   need (checkouts; the bwrap sandbox of `tollgate worker --sandbox bwrap`).
#   The VM fleet of infra/terraform does not use it (its VMs install git and
#   bubblewrap and run the binary itself); it is for workers run as
#   containers, which need a runtime that lets bubblewrap create user, mount
#   and network namespaces (e.g. docker run --security-opt seccomp=unconfined
#   --security-opt apparmor=unconfined, or --privileged).
#
# cloudbuild.yaml builds and pushes both. Both binaries are static
# (CGO_ENABLED=0: the SQLite driver is pure Go).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
RUN go build -trimpath -ldflags="-s -w" -o /out/tollgate-functions ./functions/cmd/tollgate-functions && \
    go build -trimpath -ldflags="-s -w -X main.Version=${VERSION}" -o /out/tollgate ./cmd/tollgate

FROM debian:bookworm-slim AS worker
RUN apt-get update && \
    apt-get install -y --no-install-recommends ca-certificates git bubblewrap && \
    rm -rf /var/lib/apt/lists/* && \
    install -d -m 0755 /var/lib/tollgate
COPY --from=build /out/tollgate /usr/local/bin/tollgate
WORKDIR /var/lib/tollgate
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["worker", "--backend", "gcp", "--sandbox", "bwrap", "--work-dir", "/var/lib/tollgate/work"]

FROM gcr.io/distroless/static-debian12:nonroot AS functions
COPY --from=build /out/tollgate-functions /usr/local/bin/tollgate-functions
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tollgate-functions"]
