package workflows_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.temporal.io/server/temporaltest"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/workflows"
)

func TestScratchBugs(t *testing.T) {
	if os.Getenv("SCRATCH") != "1" {
		t.Skip()
	}
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := ts.GetDefaultClient()
	var mu sync.Mutex
	var log []string
	add := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	stageBehaviour := map[string]func(ctx context.Context) error{}
	ts.NewWorker("wf", func(r worker.Registry) {
		r.RegisterWorkflowWithOptions(workflows.PipelineRecord, workflow.RegisterOptions{Name: workflows.RecordWorkflowName})
		r.RegisterActivityWithOptions(func(ctx context.Context, recordID, runID string) error { return nil }, activity.RegisterOptions{Name: "RecordStarted"})
		r.RegisterActivityWithOptions(func(ctx context.Context, recordID, status, message string, nameFromTime bool) error {
			add(recordID + " finish " + status + " " + message)
			return nil
		}, activity.RegisterOptions{Name: "FinishRecord"})
		r.RegisterActivityWithOptions(func(ctx context.Context, rec executor.Record) (activities.Environment, error) {
			add(rec.ID + " setup start")
			if rec.ID == "slow-setup" {
				time.Sleep(3 * time.Second) // no heartbeat, like the real SetupEnvironment
			}
			add(rec.ID + " setup done (environment created)")
			return activities.Environment{Env: executor.Environment{Record: rec, Workspace: "/ws"}, TaskQueue: "stage"}, nil
		}, activity.RegisterOptions{Name: "SetupEnvironment"})
	})
	stageW := ts.NewWorker("stage", func(r worker.Registry) {
		r.RegisterActivityWithOptions(func(ctx context.Context, in activities.StageInput) error {
			add(in.Record.RecordID + " stage " + in.Stage)
			mu.Lock()
			f := stageBehaviour[in.Record.RecordID]
			mu.Unlock()
			if f != nil {
				return f(ctx)
			}
			return nil
		}, activity.RegisterOptions{Name: "RunStage"})
		r.RegisterActivityWithOptions(func(ctx context.Context, env executor.Environment) error {
			add(env.Record.ID + " teardown")
			return nil
		}, activity.RegisterOptions{Name: "TeardownEnvironment"})
	})
	ctx := context.Background()
	start := func(id string) client.WorkflowRun {
		in := recordInput("codeCheckout", "unitTest")
		in.RecordID = id
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: "wf"}, workflows.RecordWorkflowName, in)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}

	// A: cancel during setup.
	runA := start("slow-setup")
	time.Sleep(time.Second)
	if err := c.CancelWorkflow(ctx, "slow-setup", ""); err != nil {
		t.Fatal(err)
	}
	errA := runA.Get(ctx, nil)
	time.Sleep(4 * time.Second)
	t.Logf("A: err=%v", errA)

	// B: a stage returns CanceledError though nobody cancelled (what runStep does when
	// the worker shuts down).
	mu.Lock()
	stageBehaviour["spurious-cancel"] = func(ctx context.Context) error { return temporal.NewCanceledError("step cancelled") }
	mu.Unlock()
	errB := start("spurious-cancel").Get(ctx, nil)
	t.Logf("B: err=%v", errB)

	// B2: the real thing: stop the stage worker while a stage runs.
	mu.Lock()
	stageBehaviour["worker-stop"] = func(ctx context.Context) error {
		<-ctx.Done()
		add("worker-stop stage ctx done: " + context.Cause(ctx).Error())
		return temporal.NewCanceledError("step cancelled") // runStep's answer to ctx.Err() != nil
	}
	mu.Unlock()
	runB2 := start("worker-stop")
	time.Sleep(2 * time.Second)
	stageW.Stop()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	errB2 := runB2.Get(cctx, nil)
	cancel()
	desc, _ := c.DescribeWorkflowExecution(ctx, "worker-stop", "")
	t.Logf("B2: err=%v status=%v", errB2, desc.GetWorkflowExecutionInfo().GetStatus())
	for _, pa := range desc.GetPendingActivities() {
		t.Logf("B2 pending: %s attempt=%d state=%v lastFailure=%v", pa.GetActivityType().GetName(), pa.GetAttempt(), pa.GetState(), pa.GetLastFailure())
	}
	_ = errors.New
	mu.Lock()
	for _, l := range log {
		t.Log(l)
	}
	mu.Unlock()
}
