package workflows_test

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/workflows"
)

// historyFile is the history of a real PipelineRecord run (three stages, Success)
// recorded against an in-memory Temporal server. Regenerate it with
//
//	go test -tags historygen ./workflows/ -run TestWriteRecordHistory
//
// only when a change to the workflow is meant to be incompatible (and then version
// the change or drain the running records first).
const historyFile = "testdata/pipeline_record_history.json"

// historyStages are the stages the recorded run performed.
var historyStages = []string{"codeCheckout", "unitTest", "package"}

// Task queues of the recorded run: the workflow's and the one SetupEnvironment
// returned for the record's stages.
const (
	generatorTaskQueue  = "cyclone"
	generatorStageQueue = "cyclone-worker-history"
)

// tWriter sends log lines to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// replay replays historyFile through wf registered as PipelineRecord, logging what
// the SDK reports at level or above to the test log.
func replay(t *testing.T, wf any, level slog.Level) error {
	t.Helper()
	return replayFile(t, wf, level, historyFile)
}

// replayFile replays a stored history file through wf registered as PipelineRecord.
func replayFile(t *testing.T, wf any, level slog.Level, file string) error {
	t.Helper()
	logger := sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: level})))
	replayer := worker.NewWorkflowReplayer()
	replayer.RegisterWorkflowWithOptions(wf, workflow.RegisterOptions{Name: workflows.RecordWorkflowName})
	return replayer.ReplayWorkflowHistoryFromJSONFile(logger, file)
}

// readHistory reads a stored history file.
func readHistory(t *testing.T, file string) *historypb.History {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hist, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return hist
}

// TestReplayPipelineRecordHistory replays the recorded run through the current
// PipelineRecord: it fails when the workflow's commands no longer match the recorded
// events (a non-deterministic change that would break records in flight).
func TestReplayPipelineRecordHistory(t *testing.T) {
	if err := replay(t, workflows.PipelineRecord, slog.LevelWarn); err != nil {
		t.Fatalf("PipelineRecord no longer replays %s: %v", historyFile, err)
	}
}

// TestRecordHistoryShape checks the stored history is the run the replay test
// expects: a completed PipelineRecord whose commands cover every kind the workflow
// makes (two local activities, setup, one activity per stage on the environment's
// queue, teardown). A truncated or foreign file would make the replay test vacuous.
func TestRecordHistoryShape(t *testing.T) {
	hist := readHistory(t, historyFile)
	events := hist.GetEvents()
	if len(events) == 0 {
		t.Fatal("empty history")
	}
	if got := events[0].GetWorkflowExecutionStartedEventAttributes().GetWorkflowType().GetName(); got != workflows.RecordWorkflowName {
		t.Fatalf("workflow type %q, want %q", got, workflows.RecordWorkflowName)
	}
	if last := events[len(events)-1].GetEventType(); last != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED {
		t.Fatalf("last event %v, want WorkflowExecutionCompleted", last)
	}

	var scheduled []string
	stageQueues := map[string]bool{}
	markers := 0
	for _, ev := range events {
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			attr := ev.GetActivityTaskScheduledEventAttributes()
			name := attr.GetActivityType().GetName()
			scheduled = append(scheduled, name)
			if name == "RunStage" || name == "TeardownEnvironment" {
				stageQueues[attr.GetTaskQueue().GetName()] = true
			}
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			markers++
		}
	}
	want := []string{"SetupEnvironment"}
	for range historyStages {
		want = append(want, "RunStage")
	}
	want = append(want, "TeardownEnvironment")
	if strings.Join(scheduled, ",") != strings.Join(want, ",") {
		t.Errorf("scheduled activities %v, want %v", scheduled, want)
	}
	if markers != 2 {
		t.Errorf("%d local activity markers, want 2 (RecordStarted, FinishRecord)", markers)
	}
	if len(stageQueues) != 1 || stageQueues[generatorTaskQueue] {
		t.Errorf("stage activities went to queues %v, want only the environment's queue", stageQueues)
	}
	stagesRun := stageInputs(t, hist)
	if strings.Join(stagesRun, ",") != strings.Join(historyStages, ",") {
		t.Errorf("stages in history %v, want %v", stagesRun, historyStages)
	}
}

func stageInputs(t *testing.T, hist *historypb.History) []string {
	t.Helper()
	dc := converter.GetDefaultDataConverter()
	var out []string
	for _, ev := range hist.GetEvents() {
		attr := ev.GetActivityTaskScheduledEventAttributes()
		if attr.GetActivityType().GetName() != "RunStage" {
			continue
		}
		var in activities.StageInput
		if err := dc.FromPayloads(attr.GetInput(), &in); err != nil {
			t.Fatal(err)
		}
		out = append(out, in.Stage)
	}
	return out
}

// The mutants below stand for incompatible edits of PipelineRecord; the replayer
// must reject each of them against the stored history.

// droppedStage runs one stage fewer than the recorded run did.
func droppedStage(ctx workflow.Context, in activities.RecordInput) error {
	in.Stages = in.Stages[:len(in.Stages)-1]
	return workflows.PipelineRecord(ctx, in)
}

// extraTimer waits before doing anything: a new command ahead of the recorded ones.
func extraTimer(ctx workflow.Context, in activities.RecordInput) error {
	if err := workflow.Sleep(ctx, 1); err != nil {
		return err
	}
	return workflows.PipelineRecord(ctx, in)
}

// setupOnly sets the environment up and stops: recorded commands go missing.
func setupOnly(ctx workflow.Context, in activities.RecordInput) error {
	var a *activities.Activities
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 1e9})
	return workflow.ExecuteActivity(ctx, a.SetupEnvironment, in.ExecutorRecord()).Get(ctx, nil)
}

func TestReplayRejectsIncompatibleChanges(t *testing.T) {
	for name, wf := range map[string]func(workflow.Context, activities.RecordInput) error{
		"dropped stage": droppedStage,
		"extra timer":   extraTimer,
		"setup only":    setupOnly,
	} {
		t.Run(name, func(t *testing.T) {
			// The SDK logs the expected non-determinism panic with its stack: keep it out.
			err := replay(t, wf, slog.LevelError+1)
			if err == nil {
				t.Fatalf("replay of %s accepted a workflow whose commands differ from the history", name)
			}
			// TMPRL1100 is the SDK's non-determinism error: the replay must fail on the
			// command mismatch, not on anything else (a missing file, say).
			if !strings.Contains(err.Error(), "TMPRL1100") {
				t.Fatalf("replay of %s failed, but not with a non-determinism error: %v", name, err)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

// localEnvHistoryFile is the history of a record run from the local-environment
// version on (three command stages, Success) on a single worker, recorded from the
// record benchmark's `cyclone dev` shape: the cloud's limit, the start, the setup,
// the teardown and the finish are local activities; the stages activities on the
// workflow's own queue.
const localEnvHistoryFile = "testdata/pipeline_record_history_local_env.json"

func TestReplayLocalEnvironmentHistory(t *testing.T) {
	if err := replayFile(t, workflows.PipelineRecord, slog.LevelWarn, localEnvHistoryFile); err != nil {
		t.Fatalf("PipelineRecord no longer replays %s: %v", localEnvHistoryFile, err)
	}
}

// generationHistoryFile is the history of a record of generation 1
// (activities.RecordGeneration) with three command stages, Success, on a single
// worker, recorded from the record benchmark's `cyclone dev` shape (a record started
// through the API): no GetVersion markers, no search attribute upserts, the record
// marked Running while its environment is set up, each stage's outcome carried to
// the next stage and the last one to FinishRecord.
const generationHistoryFile = "testdata/pipeline_record_history_generation1.json"

func TestReplayGenerationHistory(t *testing.T) {
	if err := replayFile(t, workflows.PipelineRecord, slog.LevelWarn, generationHistoryFile); err != nil {
		t.Fatalf("PipelineRecord no longer replays %s: %v", generationHistoryFile, err)
	}
}

// TestGenerationHistoryShape checks what a record of a generation saves: the stored
// history is of such a record, and it asked no GetVersion (no version marker, no
// TemporalChangeVersion upsert: a visibility write each).
func TestGenerationHistoryShape(t *testing.T) {
	hist := readHistory(t, generationHistoryFile)
	events := hist.GetEvents()
	var in activities.RecordInput
	if err := converter.GetDefaultDataConverter().FromPayloads(events[0].GetWorkflowExecutionStartedEventAttributes().GetInput(), &in); err != nil {
		t.Fatal(err)
	}
	if in.Generation != activities.RecordGeneration {
		t.Fatalf("recorded record of generation %d, want %d", in.Generation, activities.RecordGeneration)
	}
	localActivities := 0
	for _, ev := range events {
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_MARKER_RECORDED:
			if name := ev.GetMarkerRecordedEventAttributes().GetMarkerName(); name != "LocalActivity" {
				t.Errorf("marker %q: a record of a generation records only local activities", name)
			}
			localActivities++
		case enumspb.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
			t.Errorf("search attributes upserted at event %d", ev.GetEventId())
		}
	}
	// The cloud's limit, the start, the setup, the teardown and the finish.
	if localActivities != 5 {
		t.Errorf("%d local activities, want 5", localActivities)
	}
	if got := stageInputs(t, hist); strings.Join(got, ",") != "unitTest,codeScan,package" {
		t.Errorf("stages %v, want unitTest,codeScan,package", got)
	}
}
