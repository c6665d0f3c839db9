package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// SlotStore keeps the clouds' queues of records (see store.Slot).
type SlotStore interface {
	GetCloud(ctx context.Context, name string) (*model.Cloud, error)
	EnqueueSlot(ctx context.Context, recordID, cloud string, created time.Time) (*store.Slot, error)
	SlotsAhead(ctx context.Context, sl *store.Slot, limit int64) ([]*store.Slot, int64, error)
	PruneSlots(ctx context.Context, slots []*store.Slot) (int, error)
	ReleaseSlot(ctx context.Context, recordID string) error
	SetQueuePosition(ctx context.Context, recordID string, pos int64) error
}

// SlotRequest asks for room for a record on its project's cloud.
type SlotRequest struct {
	RecordID  string `json:"recordID"`
	ProjectID string `json:"projectID"`
	// Cloud is the project's cloud when the record started (RecordInput.Cloud; ""
	// is the default cloud).
	Cloud string `json:"cloud,omitempty"`
	// Created is the record's creation time: records start in that order.
	Created time.Time `json:"created"`
}

// defaultSlotPoll is how often a waiting record looks at its queue again.
const defaultSlotPoll = time.Second

// AcquireSlot returns once the record may run on its project's cloud: when the
// record is among the first maxRunningRecords of the cloud's queue (the cloud's own
// limit, else the worker's default; 0: no limit). Until then the record stays
// Pending and shows its place in the queue; the activity heartbeats, so a cancelled
// record stops waiting, and a retried attempt keeps the record's place.
func (a *Activities) AcquireSlot(ctx context.Context, req SlotRequest) error {
	if a.Slots == nil {
		return nil
	}
	cloud := req.Cloud
	if cloud == "" {
		cloud = model.DefaultCloudName
	}
	poll := a.SlotPoll
	if poll <= 0 {
		poll = defaultSlotPoll
	}
	lastPos := int64(-1)
	for {
		limit := a.cloudLimit(ctx, cloud)
		if limit <= 0 && lastPos < 0 {
			// No limit: the record runs at once and takes no place (a limit set
			// later counts only the records that start after it).
			return nil
		}
		// Enqueued again on every turn: a place pruned by mistake (a record read
		// while the store was failing over) is taken back instead of waited on forever.
		sl, err := a.Slots.EnqueueSlot(ctx, req.RecordID, cloud, req.Created)
		if err != nil {
			return err
		}
		if limit <= 0 {
			return a.Slots.SetQueuePosition(ctx, req.RecordID, 0)
		}
		ahead, n, err := a.Slots.SlotsAhead(ctx, sl, int64(limit))
		if err != nil {
			return err
		}
		if n >= int64(limit) {
			// The records holding the cloud may have ended without releasing.
			if pruned, err := a.Slots.PruneSlots(ctx, ahead); err != nil {
				a.logger().Warn("prune the queue", "cloud", cloud, "error", err)
			} else if pruned > 0 {
				continue
			}
		}
		if n < int64(limit) {
			return a.Slots.SetQueuePosition(ctx, req.RecordID, 0)
		}
		if pos := n - int64(limit) + 1; pos != lastPos {
			if err := a.Slots.SetQueuePosition(ctx, req.RecordID, pos); err != nil {
				return err
			}
			if lastPos < 0 {
				a.logger().Info("record queued", "record", req.RecordID, "cloud", cloud, "position", pos, "maxRunningRecords", limit)
			}
			lastPos = pos
		}
		activity.RecordHeartbeat(ctx, lastPos)
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for room on cloud %s: %w", cloud, ctx.Err())
		case <-time.After(poll * time.Duration(min(lastPos, 5))):
			// Records far back in the queue look less often: their turn is not near.
		}
	}
}

// CloudLimit is how many records may run at once on the cloud (RecordInput.Cloud;
// "" is the default cloud); 0: no limit, or no queues on this worker. A record of
// a cloud without a limit starts at once, as AcquireSlot would let it.
func (a *Activities) CloudLimit(ctx context.Context, cloud string) (int, error) {
	if a.Slots == nil {
		return 0, nil
	}
	if cloud == "" {
		cloud = model.DefaultCloudName
	}
	return a.cloudLimit(ctx, cloud), nil
}

// ReleaseSlot gives the record's room on its cloud to the next record waiting.
func (a *Activities) ReleaseSlot(ctx context.Context, recordID string) error {
	if a.Slots == nil {
		return nil
	}
	if err := a.Slots.ReleaseSlot(ctx, recordID); err != nil {
		return err
	}
	return a.Slots.SetQueuePosition(ctx, recordID, 0)
}

// cloudLimit is how many records may run on the cloud at once.
func (a *Activities) cloudLimit(ctx context.Context, name string) int {
	c, err := a.Slots.GetCloud(ctx, name)
	switch {
	case err == nil && c.MaxRunningRecords > 0:
		return c.MaxRunningRecords
	case err != nil && !errors.Is(err, store.ErrNotFound):
		a.logger().Warn("read the cloud's limit; using the default", "cloud", name, "error", err)
	}
	return a.MaxRunningRecords
}
