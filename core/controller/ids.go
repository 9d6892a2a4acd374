package controller

import (
	"time"

	"github.com/tollgate-ci/tollgate/core/model"
	"github.com/tollgate-ci/tollgate/core/store"
)

var zeroTime time.Time

func parsePatchsetID(id string) (int, int, error) { return model.ParsePatchsetID(id) }

func validJobID(id string) error { _, err := model.ParseJobID(id); return err }

func storePatchsetQuery(change int, cursor string) store.PatchsetQuery {
	return store.PatchsetQuery{Change: change, Limit: 1000, Cursor: cursor}
}
