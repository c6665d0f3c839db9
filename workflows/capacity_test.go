package workflows_test

import (
	"context"
	"errors"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/model"
)

// mockSlots logs AcquireSlot and ReleaseSlot; acquire decides how the wait ends.
func (s *RecordSuite) mockSlots(acquire func(ctx context.Context, req activities.SlotRequest) error) {
	a := &activities.Activities{}
	s.env.OnActivity(a.AcquireSlot, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, req activities.SlotRequest) error {
			s.add("AcquireSlot")
			if req.RecordID != "rec-1" || req.ProjectID != "p-1" {
				return errors.New("AcquireSlot: not the record's request")
			}
			return acquire(ctx, req)
		})
	s.env.OnActivity(a.ReleaseSlot, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, recordID string) error {
			s.add("ReleaseSlot")
			return nil
		})
}

// TestWaitsForRoomFirst: the record waits for room before it is marked Running and
// gives the room back after its environment is torn down, before it is finished.
func (s *RecordSuite) TestWaitsForRoomFirst() {
	s.cloudLimit = 2
	s.mockSlots(func(context.Context, activities.SlotRequest) error { return nil })
	s.Require().NoError(s.run(recordInput(model.StageCodeCheckout)))
	s.Equal([]string{"AcquireSlot", "RecordStarted", "SetupEnvironment", "RunStage:codeCheckout", "TeardownEnvironment",
		"ReleaseSlot", "FinishRecord:" + model.StatusSuccess}, s.calls())
}

// TestCancelWhileQueued: a record cancelled while it waits for room ends Aborted
// without starting, and gives its place up.
func (s *RecordSuite) TestCancelWhileQueued() {
	s.cloudLimit = 1
	entered := make(chan struct{})
	release := make(chan struct{})
	s.T().Cleanup(func() { close(release) })
	s.mockSlots(func(ctx context.Context, _ activities.SlotRequest) error {
		close(entered)
		for {
			activity.RecordHeartbeat(ctx, 1)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
				return errors.New("the wait was never cancelled")
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	s.cancelOnce(entered)
	err := s.run(recordInput(model.StageCodeCheckout))
	s.True(temporal.IsCanceledError(err), "workflow error %v is not a cancellation", err)
	s.Equal([]string{"AcquireSlot", "ReleaseSlot", "FinishRecord:" + model.StatusAborted}, s.calls())
}

// TestNoLimitNoWait: on a cloud without a limit the record neither waits for room
// nor gives any back: one look at the limit, then it starts.
func (s *RecordSuite) TestNoLimitNoWait() {
	a := &activities.Activities{}
	s.env.OnActivity(a.AcquireSlot, mock.Anything, mock.Anything).Return(
		func(context.Context, activities.SlotRequest) error { s.add("AcquireSlot"); return nil }).Maybe()
	s.env.OnActivity(a.ReleaseSlot, mock.Anything, mock.Anything).Return(
		func(context.Context, string) error { s.add("ReleaseSlot"); return nil }).Maybe()
	s.Require().NoError(s.run(recordInput(model.StageCodeCheckout)))
	s.Equal(1, s.limitAsked)
	s.Equal([]string{"RecordStarted", "SetupEnvironment", "RunStage:codeCheckout", "TeardownEnvironment",
		"FinishRecord:" + model.StatusSuccess}, s.calls())
}
