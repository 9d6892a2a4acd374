package cloudrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"
	monitoredrespb "google.golang.org/genproto/googleapis/api/monitoredres"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tollgate-ci/tollgate/adapters/firestore"
	"github.com/tollgate-ci/tollgate/adapters/gcs"
	"github.com/tollgate-ci/tollgate/adapters/gcscache"
	"github.com/tollgate-ci/tollgate/adapters/monitoring"
	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/core/store"
)

// EnvMonitoringEmulator, when set, points Cloud Monitoring at a fake
// MetricService at that host:port (emulators/monitoring) over plain gRPC,
// as the *_EMULATOR_HOST variables do for the other services.
const EnvMonitoringEmulator = "TOLLGATE_MONITORING_EMULATOR_HOST"

// MonitoringEmulatorOptions are the client options that reach a fake
// MetricService at host.
func MonitoringEmulatorOptions(host string) []option.ClientOption {
	return []option.ClientOption{option.WithEndpoint(host), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
}

// EnvRegion names the region in the monitored resource of this instance's
// cumulative metrics (default "global"); Cloud Run does not set it.
const EnvRegion = "TOLLGATE_REGION"

// The production constructors of the Google Cloud adapters: the one place
// they are wired. Each honours its emulator variable
// (FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST).
var (
	openStore = func(ctx context.Context, project string) (store.Store, error) {
		return firestore.Open(ctx, project)
	}
	openBlobs = func(ctx context.Context, bucket string) (blob.Bucket, error) {
		return gcs.Open(ctx, bucket)
	}
	openCache = func(ctx context.Context, c config.Cache, m metrics.Metrics, log *slog.Logger) (cache.Cache, error) {
		client, err := storage.NewClient(ctx)
		if err != nil {
			return nil, err
		}
		return gcscache.Open(client, c.Bucket, &gcscache.Options{
			Options: cache.Options{MinHeadroom: int64(c.MinHeadroom), MaxHeadroom: int64(c.MaxHeadroom)},
			Quota:   int64(c.Quota), Prefix: c.Prefix, TouchInterval: c.TouchInterval.D(), Metrics: m, Log: log})
	}
	openMetrics = func(ctx context.Context, project string) (metrics.Metrics, error) {
		var opts []option.ClientOption
		if host := os.Getenv(EnvMonitoringEmulator); host != "" {
			opts = MonitoringEmulatorOptions(host)
		}
		return openMonitoring(ctx, project, os.Getenv(EnvRegion), os.Getenv("K_SERVICE"), opts...)
	}
)

// openMonitoring writes gauges to the project's global resource, where one
// latest value is what the autoscaler reads whoever wrote it, and counters
// and distributions, whose cumulative points need one writer per series, to
// a generic_task resource of this instance (task_id random per process).
func openMonitoring(ctx context.Context, project, region, service string, opts ...option.ClientOption) (*splitMetrics, error) {
	gauges, err := monitoring.New(ctx, project, monitoring.Options{}, opts...)
	if err != nil {
		return nil, err
	}
	if region == "" {
		region = "global"
	}
	if service == "" {
		service = "functions"
	}
	var id [8]byte
	rand.Read(id[:])
	cumulative, err := monitoring.New(ctx, project, monitoring.Options{Resource: &monitoredrespb.MonitoredResource{
		Type: "generic_task",
		Labels: map[string]string{"project_id": project, "location": region, "namespace": "tollgate",
			"job": service, "task_id": hex.EncodeToString(id[:])},
	}}, opts...)
	if err != nil {
		gauges.Close()
		return nil, err
	}
	return &splitMetrics{gauges: gauges, cumulative: cumulative}, nil
}

// CreateDescriptors creates the catalogue's metric descriptors (idempotent):
// the `start` work Perfetto ran when an instance started.
func (m *splitMetrics) CreateDescriptors(ctx context.Context) error {
	return m.gauges.CreateDescriptors(ctx)
}

// splitMetrics sends gauges and cumulative metrics to their own resources.
type splitMetrics struct {
	gauges, cumulative *monitoring.Metrics
}

func (m *splitMetrics) Set(ctx context.Context, name string, l map[string]string, v float64) error {
	return m.gauges.Set(ctx, name, l, v)
}

func (m *splitMetrics) Observe(ctx context.Context, name string, l map[string]string, v float64) error {
	return m.cumulative.Observe(ctx, name, l, v)
}

func (m *splitMetrics) Add(ctx context.Context, name string, l map[string]string, v float64) error {
	return m.cumulative.Add(ctx, name, l, v)
}

// Flush sends what is due: a function calls it before it returns, since
// the platform may throttle the CPU once the response is sent.
func (m *splitMetrics) Flush(ctx context.Context) error {
	return errors.Join(m.gauges.Flush(ctx), m.cumulative.Flush(ctx))
}

func (m *splitMetrics) Close() error {
	return errors.Join(m.gauges.Close(), m.cumulative.Close())
}
