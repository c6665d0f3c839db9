package activities

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// stageWrites is a Store that keeps the stage updates written to it.
type stageWrites struct {
	Store
	fail    error // what every write returns, when set
	mu      sync.Mutex
	updates []model.StageUpdate
}

func (s *stageWrites) UpdateStage(_ context.Context, _ string, u model.StageUpdate) error {
	if s.fail != nil {
		return s.fail
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates = append(s.updates, u)
	return nil
}

func (s *stageWrites) ProjectCredentials(context.Context, string) (*store.Credentials, error) {
	return nil, store.ErrNotFound
}

func (s *stageWrites) PipelineSecrets(context.Context, string) (*store.PipelineSecrets, error) {
	return nil, store.ErrNotFound
}

// written lists the "<stage>:<status>" of the writes.
func (s *stageWrites) written() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, u := range s.updates {
		out = append(out, u.Stage+":"+u.Status)
	}
	return out
}

// runStageOnce runs RunStage in the SDK's activity environment with a command
// stage running cmd on the local executor.
func runStageOnce(t *testing.T, st *stageWrites, in StageInput, cmd string) ([]model.StageUpdate, error) {
	t.Helper()
	ex := local.New(t.TempDir())
	a := &Activities{Store: st, Executor: ex, HeartbeatInterval: time.Hour}
	in.Record = RecordInput{RecordID: "r1", Project: "p", Pipeline: "q", Build: &model.Build{
		BuilderImage: &model.BuilderImage{Image: "x"},
		Stages:       &model.Stages{UnitTest: &model.CommandStage{Command: []string{cmd}}},
	}}
	in.Stage = model.StageUnitTest
	env, err := ex.Setup(context.Background(), in.Record.ExecutorRecord())
	if err != nil {
		t.Fatal(err)
	}
	in.Env = env
	var ts testsuite.WorkflowTestSuite
	aenv := ts.NewTestActivityEnvironment()
	aenv.RegisterActivity(a.RunStage)
	val, err := aenv.ExecuteActivity(a.RunStage, in)
	if err != nil {
		return nil, err
	}
	var out []model.StageUpdate
	if val.HasValue() {
		if err := val.Get(&out); err != nil {
			t.Fatal(err)
		}
	}
	return out, nil
}

// A stage whose outcome the workflow carries on returns its success instead of
// writing it, and writes the earlier stage's outcome it was handed.
func TestRunStageCarriesSuccess(t *testing.T) {
	st := &stageWrites{}
	earlier := []model.StageUpdate{{Stage: model.StageCodeScan, Status: model.StatusSuccess}}
	out, err := runStageOnce(t, st, StageInput{CarryOutcome: true, Deferred: earlier}, "true")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Stage != model.StageUnitTest || out[0].Status != model.StatusSuccess || out[0].StartTime == nil || out[0].EndTime == nil {
		t.Fatalf("carried outcomes %+v, want unitTest Success with its times", out)
	}
	if got := st.written(); len(got) != 1 || got[0] != "codeScan:Success" {
		t.Fatalf("writes %v, want only the earlier stage's outcome", got)
	}
}

// A stage that succeeded while the earlier outcomes it was handed could not be
// written hands them back with its own, rather than fail and run its step again.
func TestRunStageHandsBackWhatItCouldNotWrite(t *testing.T) {
	defer func(w time.Duration) { outcomeRetryWindow = w }(outcomeRetryWindow)
	outcomeRetryWindow = 0 // one try
	st := &stageWrites{fail: errors.New("store unreachable")}
	earlier := []model.StageUpdate{{Stage: model.StageCodeScan, Status: model.StatusSuccess}}
	out, err := runStageOnce(t, st, StageInput{CarryOutcome: true, Deferred: earlier}, "true")
	if err != nil {
		t.Fatalf("RunStage failed (%v): its step would run again", err)
	}
	if len(out) != 2 || out[0].Stage != model.StageCodeScan || out[1].Stage != model.StageUnitTest {
		t.Fatalf("handed back %+v, want codeScan's outcome then unitTest's", out)
	}
}

// Without CarryOutcome a success is written, as is a failure in any case (the
// workflow gets an error, not an outcome); the earlier outcome is written first.
func TestRunStageWritesWhatIsNotCarried(t *testing.T) {
	st := &stageWrites{}
	out, err := runStageOnce(t, st, StageInput{}, "true")
	if err != nil || out != nil {
		t.Fatalf("RunStage = %+v, %v; want nothing carried and no error", out, err)
	}
	if got := st.written(); len(got) != 1 || got[0] != "unitTest:Success" {
		t.Fatalf("writes %v, want the stage's own success", got)
	}

	st = &stageWrites{}
	earlier := []model.StageUpdate{{Stage: model.StagePackage, Status: model.StatusSuccess}}
	out, err = runStageOnce(t, st, StageInput{CarryOutcome: true, Deferred: earlier}, "exit 3")
	if err == nil || out != nil {
		t.Fatalf("RunStage = %+v, %v; want the step's failure", out, err)
	}
	got := st.written()
	if len(got) != 2 || !slices.Contains(got, "package:Success") || !slices.Contains(got, "unitTest:Failed") {
		t.Fatalf("writes %v, want the earlier outcome and the failure", got)
	}
}

// failingExecutor fails every step the way an executor says the pipeline is at
// fault (a quota the cluster refuses, say).
type failingExecutor struct{ *local.Executor }

func (failingExecutor) Run(context.Context, executor.Environment, executor.Step, io.Writer) (executor.Result, error) {
	return executor.Result{}, executor.Failed("pod refused: %s", "requests.gpu: must be an integer")
}

// A step the executor refuses as the pipeline's fault fails the stage for good
// (StepFailed, not retried) with the executor's reason, which the log shows too.
func TestRunStepExecutorFailureIsFinal(t *testing.T) {
	ex := failingExecutor{local.New(t.TempDir())}
	a := &Activities{Executor: ex, HeartbeatInterval: time.Hour}
	env, err := ex.Setup(context.Background(), executor.Record{ID: "r1", Project: "p", Pipeline: "q"})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	err = a.runStep(context.Background(), env, executor.Step{Name: "unitTest", Command: []string{"true"}}, &log)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != ErrTypeStepFailed || !appErr.NonRetryable() {
		t.Fatalf("runStep = %v, want a non-retryable %s", err, ErrTypeStepFailed)
	}
	if !strings.Contains(appErr.Message(), "requests.gpu") || !strings.Contains(log.String(), "requests.gpu") {
		t.Fatalf("message %q, log %q: want the executor's reason in both", appErr.Message(), log.String())
	}
}
