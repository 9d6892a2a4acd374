package workerapi

import (
	"context"

	"github.com/tollgate-ci/tollgate/core/store"
)

// Revoke revokes the current worker API token of workerID, as deleting a
// worker in the UI does: its calls are refused from then on (403, which
// tells the client to enroll again, so a worker that holds the enroll
// secret comes back; quarantine stops one from taking jobs). A worker
// without a token is not an error.
func Revoke(ctx context.Context, st store.Store, workerID string) error {
	hash, err := st.GetMeta(ctx, tokenOfKeyPrefix+workerID)
	if err != nil || hash == "" {
		return err
	}
	// The Store has no delete: an empty value reads as missing.
	if err := st.SetMeta(ctx, tokenKeyPrefix+hash, ""); err != nil {
		return err
	}
	return st.SetMeta(ctx, tokenOfKeyPrefix+workerID, "")
}
