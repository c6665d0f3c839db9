//go:build historygen

package workflows_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.temporal.io/server/temporaltest"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/workflows"
)

// TestWriteRecordHistory regenerates historyFile from a real run of PipelineRecord
// on an in-memory Temporal server, with stub activities registered under the real
// activities' names and signatures. It is a generator, built only with its tag:
//
//	go test -tags historygen ./workflows/ -run TestWriteRecordHistory
func TestWriteRecordHistory(t *testing.T) {
	ts := temporaltest.NewServer(
		temporaltest.WithT(t),
		temporaltest.WithBaseClientOptions(client.Options{Identity: "cyclone-history-generator"}),
	)
	c := ts.GetDefaultClient()

	var (
		mu      sync.Mutex
		stages  []string
		finish  []string
		started []string
	)
	// The workflow's own queue: the workflow, the projection writes (local
	// activities) and the setup, as on the shared queue of a Cyclone worker.
	ts.NewWorker(generatorTaskQueue, func(r worker.Registry) {
		r.RegisterWorkflowWithOptions(workflows.PipelineRecord, workflow.RegisterOptions{Name: workflows.RecordWorkflowName})
		r.RegisterActivityWithOptions(func(ctx context.Context, recordID, runID string) error {
			mu.Lock()
			defer mu.Unlock()
			started = append(started, recordID)
			return nil
		}, activity.RegisterOptions{Name: "RecordStarted"})
		r.RegisterActivityWithOptions(func(ctx context.Context, recordID, status, message string, nameFromTime bool, _ []model.StageUpdate) error {
			mu.Lock()
			defer mu.Unlock()
			finish = append(finish, status)
			return nil
		}, activity.RegisterOptions{Name: "FinishRecord"})
		r.RegisterActivityWithOptions(func(ctx context.Context, rec executor.Record) (activities.Environment, error) {
			return activities.Environment{
				Env:       executor.Environment{Record: rec, Workspace: "/var/lib/cyclone/workspaces/" + rec.ID},
				TaskQueue: generatorStageQueue,
			}, nil
		}, activity.RegisterOptions{Name: "SetupEnvironment"})
	})
	// The record worker's own queue: only stages and the teardown are served here, so
	// a stage sent anywhere else would never run.
	ts.NewWorker(generatorStageQueue, func(r worker.Registry) {
		r.RegisterActivityWithOptions(func(ctx context.Context, in activities.StageInput) error {
			if in.Env.Workspace == "" {
				return errors.New("stage without the environment")
			}
			mu.Lock()
			defer mu.Unlock()
			stages = append(stages, in.Stage)
			return nil
		}, activity.RegisterOptions{Name: "RunStage"})
		r.RegisterActivityWithOptions(func(ctx context.Context, env executor.Environment) error {
			return nil
		}, activity.RegisterOptions{Name: "TeardownEnvironment"})
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := recordInput(historyStages...)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: in.RecordID, TaskQueue: generatorTaskQueue},
		workflows.RecordWorkflowName, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("record run: %v", err)
	}
	mu.Lock()
	if !slices.Equal(stages, historyStages) || !slices.Equal(finish, []string{model.StatusSuccess}) || len(started) != 1 {
		t.Fatalf("run went wrong: started %v, stages %v, finished %v", started, stages, finish)
	}
	mu.Unlock()

	hist := &historypb.History{}
	iter := c.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		hist.Events = append(hist.Events, ev)
	}
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(hist)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(historyFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(historyFile, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d events", historyFile, len(hist.Events))
}
