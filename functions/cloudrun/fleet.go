package cloudrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/blob"
	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/config"
	"github.com/tollgate-ci/tollgate/core/fleet"
	"github.com/tollgate-ci/tollgate/core/store"
)

// FleetRuntime is what a worker VM in Google Cloud mode runs on: the fleet
// service straight on Firestore, Pub/Sub and Cloud Storage (the direct
// transport). It holds no Gerrit credentials: workers never talk to Gerrit.
type FleetRuntime struct {
	Config *config.Config
	Store  store.Store
	Tasks  *pubsub.Tasks
	Blobs  blob.Bucket
	Cache  cache.Cache // nil without cache.bucket
	Fleet  *fleet.Service
}

// BuildFleet opens what FleetRuntime needs. Settings.WebhookToken,
// EnrollSecret and Channel are not used.
func BuildFleet(ctx context.Context, s Settings, a Adapters, log *slog.Logger) (*FleetRuntime, error) {
	a = a.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	rt := &FleetRuntime{}
	ok := false
	defer func() {
		if !ok {
			rt.Close()
		}
	}()
	b, err := a.ReadConfig(ctx, s.Config)
	if err != nil {
		return nil, err
	}
	if rt.Config, err = config.Parse(b); err != nil {
		return nil, fmt.Errorf("config %s: %w", s.Config, err)
	}
	if rt.Store, err = a.OpenStore(ctx, s.Project); err != nil {
		return nil, err
	}
	if rt.Tasks, err = a.OpenTasks(ctx, s.Project, s.TopicPrefix); err != nil {
		return nil, err
	}
	if rt.Blobs, err = a.OpenBlobs(ctx, s.BlobBucket); err != nil {
		return nil, err
	}
	if rt.Config.Cache.Bucket != "" && !rt.Config.Cache.Disabled {
		if rt.Cache, err = a.OpenCache(ctx, rt.Config.Cache, nil, log); err != nil {
			return nil, err
		}
	}
	if rt.Fleet, err = fleet.NewService(fleet.Options{Config: rt.Config, Store: rt.Store, Tasks: rt.Tasks,
		Blobs: rt.Blobs, Log: log}); err != nil {
		return nil, err
	}
	ok = true
	return rt, nil
}

// Close closes what BuildFleet opened.
func (rt *FleetRuntime) Close() error {
	var list []error
	if rt.Cache != nil {
		list = append(list, rt.Cache.Close())
	}
	if rt.Tasks != nil {
		list = append(list, rt.Tasks.Close())
	}
	if rt.Blobs != nil {
		list = append(list, rt.Blobs.Close())
	}
	if rt.Store != nil {
		list = append(list, rt.Store.Close())
	}
	return errors.Join(list...)
}
