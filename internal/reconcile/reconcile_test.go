package reconcile_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/reconcile"
)

// fakeStore holds unfinished records and what the reconciler finished.
type fakeStore struct {
	records  []*model.Record
	finished map[string]model.Record        // by ID: status, message, end time
	stages   map[string][]model.StageUpdate // by ID: the held outcomes written
	lists    int                            // ListUnfinishedRecords calls
}

// ListUnfinishedRecords pages as the store does: in the order (start time, ID), from
// the record after (after, afterID).
func (s *fakeStore) ListUnfinishedRecords(_ context.Context, after time.Time, afterID string, before time.Time, limit int64) ([]*model.Record, error) {
	if s.lists++; s.lists > 100 {
		return nil, errors.New("fakeStore: 100 pages listed; the pass does not move forward")
	}
	recs := slices.Clone(s.records)
	slices.SortFunc(recs, func(a, b *model.Record) int {
		return cmp.Or(a.StartTime.Compare(b.StartTime), cmp.Compare(a.ID, b.ID))
	})
	var out []*model.Record
	for _, r := range recs {
		next := r.StartTime.After(after) || r.StartTime.Equal(after) && r.ID > afterID
		if next && r.StartTime.Before(before) && int64(len(out)) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *fakeStore) FinishRecordWith(_ context.Context, id, status, message string, end time.Time, stages []model.StageUpdate) error {
	s.finished[id] = model.Record{Status: status, ErrorMessage: message, EndTime: &end}
	if len(stages) > 0 {
		if s.stages == nil {
			s.stages = map[string][]model.StageUpdate{}
		}
		s.stages[id] = stages
	}
	return nil
}

// fakeTemporal answers Describe from a table of workflow states; a missing workflow
// is NotFound, and "down" an unavailable server.
type fakeTemporal map[string]enums.WorkflowExecutionStatus

var closedAt = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func (t fakeTemporal) DescribeWorkflowExecution(_ context.Context, id, _ string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	if id == "down" {
		return nil, serviceerror.NewUnavailable("temporal is restarting")
	}
	status, ok := t[id]
	if !ok {
		return nil, serviceerror.NewNotFound("workflow not found")
	}
	info := &workflowpb.WorkflowExecutionInfo{Status: status}
	if status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		info.CloseTime = timestamppb.New(closedAt)
	}
	return &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: info}, nil
}

// TestOnceClosesRecordsOfClosedWorkflows: each way a workflow can close without
// writing its record's ending puts the record in the matching terminal state at the
// workflow's close time; a running workflow, a record too young to check and a
// Temporal that does not answer leave the record as it is.
func TestOnceClosesRecordsOfClosedWorkflows(t *testing.T) {
	old := time.Now().Add(-time.Hour)
	temporal := fakeTemporal{
		"terminated": enums.WORKFLOW_EXECUTION_STATUS_TERMINATED,
		"cancelled":  enums.WORKFLOW_EXECUTION_STATUS_CANCELED,
		"timed-out":  enums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT,
		"completed":  enums.WORKFLOW_EXECUTION_STATUS_COMPLETED,
		"failed":     enums.WORKFLOW_EXECUTION_STATUS_FAILED,
		"running":    enums.WORKFLOW_EXECUTION_STATUS_RUNNING,
		"young":      enums.WORKFLOW_EXECUTION_STATUS_TERMINATED,
	}
	want := map[string]struct{ status, message string }{
		"terminated": {model.StatusAborted, "the record's workflow was terminated in Temporal"},
		"cancelled":  {model.StatusAborted, ""},
		"timed-out":  {model.StatusFailed, "the record's workflow timed out"},
		"completed":  {model.StatusSuccess, ""},
		"failed":     {model.StatusFailed, "the record's workflow ended as Failed"},
		"lost":       {model.StatusFailed, "the record's workflow does not exist in Temporal"},
	}
	st := &fakeStore{finished: map[string]model.Record{}}
	for i, id := range []string{"terminated", "cancelled", "timed-out", "completed", "failed", "lost", "running", "down"} {
		st.records = append(st.records, &model.Record{ID: id, WorkflowID: id, Status: model.StatusRunning, StartTime: old.Add(time.Duration(i) * time.Second)})
	}
	st.records = append(st.records, &model.Record{ID: "young", WorkflowID: "young", Status: model.StatusRunning, StartTime: time.Now()})

	err := (&reconcile.Reconciler{Store: st, Temporal: temporal}).Once(context.Background())
	var unavailable *serviceerror.Unavailable
	if !errors.As(err, &unavailable) {
		t.Errorf("Once: %v, want the unreachable workflow's error reported", err)
	}
	for id, w := range want {
		got, ok := st.finished[id]
		switch {
		case !ok:
			t.Errorf("record %s not closed", id)
		case got.Status != w.status || got.ErrorMessage != w.message:
			t.Errorf("record %s closed %s %q, want %s %q", id, got.Status, got.ErrorMessage, w.status, w.message)
		case id != "lost" && !got.EndTime.Equal(closedAt):
			t.Errorf("record %s ended %v, want the workflow's close time %v", id, got.EndTime, closedAt)
		}
	}
	for _, id := range []string{"running", "down", "young"} {
		if got, ok := st.finished[id]; ok {
			t.Errorf("record %s closed %+v, want it left alone", id, got)
		}
	}
}

// TestOncePagesThroughTiedStartTimes: records that started at the same instant, more
// of them than a page holds, are all visited, however a page boundary falls among
// them, and each page is read once.
func TestOncePagesThroughTiedStartTimes(t *testing.T) {
	tied := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	temporal := fakeTemporal{}
	st := &fakeStore{finished: map[string]model.Record{}}
	add := func(id string, start time.Time) {
		temporal[id] = enums.WORKFLOW_EXECUTION_STATUS_TERMINATED
		st.records = append(st.records, &model.Record{ID: id, WorkflowID: id, Status: model.StatusRunning, StartTime: start})
	}
	add("before", tied.Add(-time.Second))
	for i := 7; i >= 1; i-- { // stored out of ID order
		add(fmt.Sprintf("tied-%d", i), tied)
	}
	add("after", tied.Add(time.Second))

	if err := (&reconcile.Reconciler{Store: st, Temporal: temporal, PageSize: 3}).Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range st.records {
		if got, ok := st.finished[r.ID]; !ok || got.Status != model.StatusAborted {
			t.Errorf("record %s (started %v): closed %v, status %q; want it closed Aborted", r.ID, r.StartTime, ok, got.Status)
		}
	}
	if want := len(st.records)/3 + 1; st.lists != want { // 3 full pages, then an empty one
		t.Errorf("%d pages listed, want %d", st.lists, want)
	}
}

// GetWorkflowHistory serves empty histories.
func (t fakeTemporal) GetWorkflowHistory(context.Context, string, string, bool, enums.HistoryEventFilterType) client.HistoryEventIterator {
	return &eventIterator{}
}

// historyTemporal is a fakeTemporal that also serves workflow histories.
type historyTemporal struct {
	fakeTemporal
	histories map[string][]*historypb.HistoryEvent
}

func (t historyTemporal) GetWorkflowHistory(_ context.Context, id, _ string, _ bool, _ enums.HistoryEventFilterType) client.HistoryEventIterator {
	return &eventIterator{events: t.histories[id]}
}

type eventIterator struct{ events []*historypb.HistoryEvent }

func (it *eventIterator) HasNext() bool { return len(it.events) > 0 }

func (it *eventIterator) Next() (*historypb.HistoryEvent, error) {
	ev := it.events[0]
	it.events = it.events[1:]
	return ev, nil
}

// stageEvents are the scheduled and completed events of a stage activity that
// handed outcomes back (none when outcomes is nil, as records before carrying did).
func stageEvents(t *testing.T, scheduledID int64, outcomes []model.StageUpdate) []*historypb.HistoryEvent {
	t.Helper()
	completed := &historypb.ActivityTaskCompletedEventAttributes{ScheduledEventId: scheduledID}
	if outcomes != nil {
		result, err := converter.GetDefaultDataConverter().ToPayloads(outcomes)
		if err != nil {
			t.Fatal(err)
		}
		completed.Result = result
	}
	return []*historypb.HistoryEvent{
		{EventId: scheduledID, EventType: enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
			Attributes: &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
				ActivityType: &commonpb.ActivityType{Name: "RunStage"}}}},
		{EventId: scheduledID + 2, EventType: enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
			Attributes: &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{ActivityTaskCompletedEventAttributes: completed}},
	}
}

// A record whose workflow was terminated after a stage handed its success back
// (to be written by the next stage, which never ran) ends with that stage's
// success written, from the workflow's history: the last stage to succeed's
// outcomes, not an earlier one's.
func TestRecordWritesTheOutcomesTheWorkflowHeld(t *testing.T) {
	unitTest := model.StageUpdate{Stage: model.StageUnitTest, Status: model.StatusSuccess}
	pkg := model.StageUpdate{Stage: model.StagePackage, Status: model.StatusSuccess}
	history := append(stageEvents(t, 5, []model.StageUpdate{unitTest}), stageEvents(t, 11, []model.StageUpdate{pkg})...)
	tc := historyTemporal{
		fakeTemporal: fakeTemporal{"cut": enums.WORKFLOW_EXECUTION_STATUS_TERMINATED, "old": enums.WORKFLOW_EXECUTION_STATUS_TERMINATED},
		histories:    map[string][]*historypb.HistoryEvent{"cut": history, "old": stageEvents(t, 5, nil)},
	}
	st := &fakeStore{finished: map[string]model.Record{}}
	for _, id := range []string{"cut", "old"} {
		ending, err := reconcile.Record(context.Background(), st, tc, &model.Record{ID: id, WorkflowID: id, Status: model.StatusRunning})
		if err != nil || ending == nil || ending.Status != model.StatusAborted {
			t.Fatalf("Record(%s) = %+v, %v; want it Aborted", id, ending, err)
		}
	}
	if got := st.stages["cut"]; len(got) != 1 || got[0].Stage != pkg.Stage || got[0].Status != pkg.Status {
		t.Errorf("outcomes written with the ending: %+v, want package's success only", got)
	}
	if got, ok := st.stages["old"]; ok {
		t.Errorf("a history without outcomes handed back wrote %+v", got)
	}
}

// RecordIfKnown leaves a record whose workflow Temporal does not know alone (its
// create may not have started it yet), where Record fails it; both close a record
// whose workflow Temporal knows closed.
func TestRecordIfKnownLeavesUnknownWorkflows(t *testing.T) {
	tc := fakeTemporal{"cut": enums.WORKFLOW_EXECUTION_STATUS_TERMINATED}
	st := &fakeStore{finished: map[string]model.Record{}}
	ctx := context.Background()
	if ending, err := reconcile.RecordIfKnown(ctx, st, tc, &model.Record{ID: "new", WorkflowID: "new"}); err != nil || ending != nil {
		t.Fatalf("RecordIfKnown(unknown workflow) = %+v, %v; want nothing done", ending, err)
	}
	if _, ok := st.finished["new"]; ok {
		t.Fatal("RecordIfKnown finished a record whose workflow Temporal does not know")
	}
	if ending, err := reconcile.RecordIfKnown(ctx, st, tc, &model.Record{ID: "cut", WorkflowID: "cut"}); err != nil || ending == nil || ending.Status != model.StatusAborted {
		t.Fatalf("RecordIfKnown(terminated workflow) = %+v, %v; want it Aborted", ending, err)
	}
	if ending, err := reconcile.Record(ctx, st, tc, &model.Record{ID: "new", WorkflowID: "new"}); err != nil || ending == nil || ending.Status != model.StatusFailed {
		t.Fatalf("Record(unknown workflow) = %+v, %v; want it Failed", ending, err)
	}
}
