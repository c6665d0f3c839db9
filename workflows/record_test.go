package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/suite"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/searchattr"
	"github.com/cycloneci/cyclone/starter"
	"github.com/cycloneci/cyclone/workflows"
)

// stageQueue is the record worker's own task queue that the SetupEnvironment mock
// hands back; every stage (and the teardown) must be sent there.
const stageQueue = "cyclone-worker-w1"

// finishCall is what the workflow passed to FinishRecord.
type finishCall struct {
	recordID, status, message string
	nameFromTime              bool
	carried                   []string // "<stage>:<status>" of each outcome handed over
}

// stageCall is one RunStage attempt as the mock saw it.
type stageCall struct {
	stage     string
	attempt   int32
	taskQueue string
	deferred  []string // the stages whose outcomes the attempt was handed
}

// RecordSuite runs PipelineRecord in the SDK's test environment with every activity
// mocked. The mocks log each call into s.log so a test can check the sequence of
// calls, not just their presence; the behaviour of RunStage and SetupEnvironment is
// chosen per test through s.runStage and s.setup.
type RecordSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env *testsuite.TestWorkflowEnvironment

	mu       sync.Mutex
	log      []string    // "RecordStarted", "SetupEnvironment", "RunStage:<stage>", "TeardownEnvironment", "FinishRecord:<status>"
	stages   []stageCall // every RunStage attempt, in order
	finishes []finishCall
	teardown []string // task queue of each TeardownEnvironment attempt
	setupQ   []string // task queue of each SetupEnvironment attempt

	runStage      func(ctx context.Context, in activities.StageInput) error
	setup         func(ctx context.Context, rec executor.Record) (activities.Environment, error)
	teardownErr   error
	cloudLimit    int // what the CloudLimit local activity answers
	limitAsked    int
	localSetup    []bool // whether each SetupEnvironment attempt was a local activity
	localTeardown []bool // the same for TeardownEnvironment
	started       []activities.StartRequest
}

func TestRecordSuite(t *testing.T) {
	suite.Run(t, new(RecordSuite))
}

func (s *RecordSuite) SetupTest() {
	s.log, s.stages, s.finishes, s.teardown, s.setupQ = nil, nil, nil, nil, nil
	s.teardownErr = nil
	s.cloudLimit, s.limitAsked, s.localSetup, s.localTeardown, s.started = 0, 0, nil, nil, nil
	s.runStage = func(context.Context, activities.StageInput) error { return nil }
	s.setup = func(_ context.Context, rec executor.Record) (activities.Environment, error) {
		return activities.Environment{
			Env:       executor.Environment{Record: rec, Workspace: "/ws/" + rec.ID},
			TaskQueue: stageQueue,
		}, nil
	}

	s.env = s.NewTestWorkflowEnvironment()
	s.env.SetTestTimeout(30 * time.Second)
	a := &activities.Activities{}
	s.env.RegisterActivity(a)

	// RecordStarted and FinishRecord are local activities; the test environment mocks
	// them through OnActivity as well.
	s.env.OnActivity(a.RecordStarted, mock.Anything, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, recordID, runID string) error {
			s.add("RecordStarted")
			if recordID != "rec-1" || runID == "" {
				return fmt.Errorf("RecordStarted(%q, %q): want record rec-1 and a run ID", recordID, runID)
			}
			return nil
		}).Maybe()
	s.env.OnActivity(a.StartRecord, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, req activities.StartRequest) error {
			s.add("RecordStarted")
			s.mu.Lock()
			s.started = append(s.started, req)
			s.mu.Unlock()
			if req.RecordID != "rec-1" || req.RunID == "" || req.ProjectID != "p-1" {
				return fmt.Errorf("StartRecord(%+v): want record rec-1 of project p-1 and a run ID", req)
			}
			return nil
		}).Maybe()
	s.env.OnActivity(a.CloudLimit, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, cloud string) (int, error) {
			// Not logged: a look at the store, not a step of the record.
			s.mu.Lock()
			defer s.mu.Unlock()
			s.limitAsked++
			return s.cloudLimit, nil
		}).Maybe()
	s.env.OnActivity(a.SetupEnvironment, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, rec executor.Record) (activities.Environment, error) {
			s.mu.Lock()
			s.log = append(s.log, "SetupEnvironment")
			s.setupQ = append(s.setupQ, activity.GetInfo(ctx).TaskQueue)
			s.localSetup = append(s.localSetup, activity.GetInfo(ctx).IsLocalActivity)
			s.mu.Unlock()
			return s.setup(ctx, rec)
		}).Maybe()
	s.env.OnActivity(a.RunStage, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, in activities.StageInput) ([]model.StageUpdate, error) {
			info := activity.GetInfo(ctx)
			call := stageCall{stage: in.Stage, attempt: info.Attempt, taskQueue: info.TaskQueue}
			for _, u := range in.Deferred {
				call.deferred = append(call.deferred, u.Stage)
			}
			s.mu.Lock()
			s.log = append(s.log, "RunStage:"+in.Stage)
			s.stages = append(s.stages, call)
			s.mu.Unlock()
			if err := s.runStage(ctx, in); err != nil {
				return nil, err
			}
			if !in.CarryOutcome {
				return nil, nil
			}
			// As the real RunStage does, a success comes back for a later write.
			return []model.StageUpdate{{Stage: in.Stage, Status: model.StatusSuccess}}, nil
		}).Maybe()
	s.env.OnActivity(a.TeardownEnvironment, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, env executor.Environment) error {
			s.mu.Lock()
			s.log = append(s.log, "TeardownEnvironment")
			s.teardown = append(s.teardown, activity.GetInfo(ctx).TaskQueue)
			s.localTeardown = append(s.localTeardown, activity.GetInfo(ctx).IsLocalActivity)
			s.mu.Unlock()
			if env.Record.ID != "rec-1" {
				return fmt.Errorf("teardown of %+v: not the record's environment", env)
			}
			return s.teardownErr
		}).Maybe()
	s.env.OnActivity(a.FinishRecord, mock.Anything, mock.Anything, mock.Anything, mock.Anything, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, recordID, status, message string, nameFromTime bool, stages []model.StageUpdate) error {
			var carried []string
			for _, u := range stages {
				carried = append(carried, u.Stage+":"+u.Status)
			}
			s.mu.Lock()
			s.log = append(s.log, "FinishRecord:"+status)
			s.finishes = append(s.finishes, finishCall{recordID, status, message, nameFromTime, carried})
			s.mu.Unlock()
			return nil
		}).Maybe()
}

func (s *RecordSuite) AfterTest(_, _ string) {
	s.env.AssertExpectations(s.T())
}

func (s *RecordSuite) add(entry string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, entry)
}

// calls is the log of calls. The Running mark and the setup of a record of a
// generation run at once: whichever came first, they are logged in that order.
func (s *RecordSuite) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]string(nil), s.log...)
	if len(out) >= 2 && out[0] == "SetupEnvironment" && out[1] == "RecordStarted" {
		out[0], out[1] = out[1], out[0]
	}
	return out
}

func (s *RecordSuite) stageNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, c := range s.stages {
		out = append(out, c.stage)
	}
	return out
}

// finished returns the single FinishRecord call.
func (s *RecordSuite) finished() finishCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Require().Len(s.finishes, 1, "FinishRecord must be called exactly once")
	return s.finishes[0]
}

// cancelOnce cancels the workflow, through a delayed callback, as soon as entered is
// closed (an activity has started and blocks), however slow the machine is.
func (s *RecordSuite) cancelOnce(entered <-chan struct{}) {
	var poll func()
	poll = func() {
		select {
		case <-entered:
			s.env.CancelWorkflow()
		default:
			s.env.RegisterDelayedCallback(poll, 20*time.Millisecond)
		}
	}
	s.env.RegisterDelayedCallback(poll, 20*time.Millisecond)
}

func (s *RecordSuite) run(in activities.RecordInput) error {
	s.env.ExecuteWorkflow(workflows.PipelineRecord, in)
	s.Require().True(s.env.IsWorkflowCompleted(), "workflow did not complete")
	return s.env.GetWorkflowError()
}

// allStages configures all seven stages; package may fail without failing the record
// when packageAllowFailure is set.
func allStages(packageAllowFailure bool) *model.Stages {
	return &model.Stages{
		CodeCheckout: &model.CodeCheckoutStage{CodeSources: []model.CodeSource{{
			Type: "GitHub", Main: true, GitHub: &model.GitSource{URL: "https://github.com/example/app.git"},
		}}},
		UnitTest:        &model.CommandStage{Command: []string{"go test ./..."}},
		CodeScan:        &model.CodeScanStage{Command: []string{"go vet ./..."}},
		Package:         &model.CommandStage{Command: []string{"go build ./..."}, AllowFailure: packageAllowFailure},
		ImageBuild:      &model.ImageBuildStage{BuildInfos: []model.BuildInfo{{ImageName: "example/app:v1"}}},
		IntegrationTest: &model.IntegrationTestStage{Config: &model.IntegrationTestConfig{Command: []string{"make it"}, ImageName: "example/app:v1"}},
		ImageRelease:    &model.ImageReleaseStage{ReleasePolicies: []model.ReleasePolicy{{ImageName: "example/app:v1", Type: model.ReleaseAlways}}},
	}
}

// recordInput is a record of a pipeline with every stage configured that runs the
// given stages.
func recordInput(stages ...string) activities.RecordInput {
	return activities.RecordInput{
		RecordID:     "rec-1",
		ProjectID:    "p-1",
		PipelineID:   "pl-1",
		Project:      "proj",
		Pipeline:     "app",
		Trigger:      model.TriggerUser,
		Params:       model.PerformParams{Ref: "main"},
		Stages:       stages,
		Build:        &model.Build{BuilderImage: &model.BuilderImage{Image: "golang:1.26"}, Stages: allStages(false)},
		StageTimeout: time.Hour,
		StartTime:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func stepFailed(msg string) error {
	return temporal.NewNonRetryableApplicationError(msg, activities.ErrTypeStepFailed, nil)
}

// TestStageOrder: stages selected out of order (and a pipeline whose stages are all
// configured) run in Cyclone order, once each, after setup and before teardown.
func (s *RecordSuite) TestStageOrder() {
	p := &model.Pipeline{
		ID: "pl-1", Name: "app",
		Build: &model.Build{BuilderImage: &model.BuilderImage{Image: "golang:1.26"}, Stages: allStages(false)},
	}
	rec := &model.Record{
		ID: "rec-1", Trigger: model.TriggerUser, StartTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		PerformParams: &model.PerformParams{Ref: "main", Stages: []string{
			model.StageImageRelease, model.StagePackage, model.StageCodeCheckout, model.StageIntegrationTest,
			model.StageUnitTest, model.StageImageBuild, model.StageCodeScan,
		}},
	}
	in := starter.Input(rec, &model.Project{ID: "p-1", Name: "proj"}, p)

	s.NoError(s.run(in))
	s.Equal(model.StageOrder, s.stageNames())
	want := []string{"RecordStarted", "SetupEnvironment"}
	for _, st := range model.StageOrder {
		want = append(want, "RunStage:"+st)
	}
	want = append(want, "TeardownEnvironment", "FinishRecord:"+model.StatusSuccess)
	s.Equal(want, s.calls())
	f := s.finished()
	// Each stage's outcome is handed to the next stage to write, the last one's to
	// FinishRecord.
	s.Equal(finishCall{recordID: "rec-1", status: model.StatusSuccess, message: "", nameFromTime: true,
		carried: []string{model.StageImageRelease + ":" + model.StatusSuccess}}, f)
	for i, c := range s.stages {
		if i == 0 {
			s.Empty(c.deferred, "the first stage has no earlier outcome to write")
			continue
		}
		s.Equal([]string{model.StageOrder[i-1]}, c.deferred, "stage %s must write the outcome of the stage before it", c.stage)
	}
}

// TestCarriedOutcomeAfterFailure: when a stage fails, the outcome of the stage that
// succeeded before it still reaches FinishRecord (the failed attempt may not have
// written it), and a stage that wrote its own outcome hands nothing on.
func (s *RecordSuite) TestCarriedOutcomeAfterFailure() {
	s.runStage = func(_ context.Context, in activities.StageInput) error {
		if in.Stage == model.StagePackage {
			return stepFailed("command exited with code 2")
		}
		return nil
	}
	err := s.run(recordInput(model.StageUnitTest, model.StagePackage, model.StageImageBuild))
	s.Error(err)
	f := s.finished()
	s.Equal(model.StatusFailed, f.status)
	s.Equal([]string{model.StageUnitTest + ":" + model.StatusSuccess}, f.carried)
	s.Equal([]string{model.StageUnitTest}, s.stages[1].deferred)
}

// TestStageSelection: only the stages of in.Stages run, though all seven are
// configured; a record with a name does not ask FinishRecord to name it.
func (s *RecordSuite) TestStageSelection() {
	in := recordInput(model.StageCodeCheckout, model.StagePackage, model.StageImageRelease)
	in.Params.Name = "release-1"

	s.NoError(s.run(in))
	s.Equal([]string{model.StageCodeCheckout, model.StagePackage, model.StageImageRelease}, s.stageNames())
	f := s.finished()
	s.Equal(model.StatusSuccess, f.status)
	s.False(f.nameFromTime, "a named record must not be named from its start time")
}

// TestFailingStageStopsRecord: a stage that fails (StepFailed) is not retried, the
// stages after it do not run, the environment is still torn down, FinishRecord gets
// Failed with the stage's name and message, and the workflow fails.
func (s *RecordSuite) TestFailingStageStopsRecord() {
	s.runStage = func(_ context.Context, in activities.StageInput) error {
		if in.Stage == model.StageUnitTest {
			return stepFailed("command exited with code 1")
		}
		return nil
	}
	err := s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest, model.StagePackage, model.StageImageBuild))

	s.Error(err)
	var appErr *temporal.ApplicationError
	s.Require().ErrorAs(err, &appErr)
	s.Equal("RecordFailed", appErr.Type())
	s.Contains(appErr.Message(), model.StageUnitTest)
	s.Equal([]string{model.StageCodeCheckout, model.StageUnitTest}, s.stageNames(), "no stage may run after the failing one")
	s.Equal([]string{
		"RecordStarted", "SetupEnvironment", "RunStage:codeCheckout", "RunStage:unitTest",
		"TeardownEnvironment", "FinishRecord:" + model.StatusFailed,
	}, s.calls())
	f := s.finished()
	s.Equal(model.StatusFailed, f.status)
	s.Equal("unitTest: command exited with code 1", f.message)
}

// TestAllowFailureContinues: a failing package stage with allowFailure lets the later
// stages run and the record ends Success; the same failure without allowFailure
// fails the record (so the test shows the flag is what makes the difference).
func (s *RecordSuite) TestAllowFailureContinues() {
	s.runStage = func(_ context.Context, in activities.StageInput) error {
		if in.Stage == model.StagePackage {
			return stepFailed("command exited with code 2")
		}
		return nil
	}
	in := recordInput(model.StageCodeCheckout, model.StagePackage, model.StageImageBuild)
	in.Build.Stages = allStages(true)

	s.NoError(s.run(in))
	s.Equal([]string{model.StageCodeCheckout, model.StagePackage, model.StageImageBuild}, s.stageNames())
	s.Equal(model.StatusSuccess, s.finished().status)
	s.Empty(s.finished().message)
}

func (s *RecordSuite) TestAllowFailureOffFails() {
	s.runStage = func(_ context.Context, in activities.StageInput) error {
		if in.Stage == model.StagePackage {
			return stepFailed("command exited with code 2")
		}
		return nil
	}
	err := s.run(recordInput(model.StageCodeCheckout, model.StagePackage, model.StageImageBuild))
	s.Error(err)
	s.Equal([]string{model.StageCodeCheckout, model.StagePackage}, s.stageNames())
	s.Equal(model.StatusFailed, s.finished().status)
	s.Contains(s.finished().message, model.StagePackage)
}

// TestInfrastructureErrorIsRetried: a plain error (a dead Docker engine, say) is
// retried, and a stage that then succeeds leaves the record Success.
func (s *RecordSuite) TestInfrastructureErrorIsRetried() {
	s.runStage = func(ctx context.Context, in activities.StageInput) error {
		if in.Stage == model.StageUnitTest && activity.GetInfo(ctx).Attempt < 3 {
			return errors.New("docker: connection refused")
		}
		return nil
	}
	s.NoError(s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest, model.StagePackage)))

	s.Equal([]string{model.StageCodeCheckout, model.StageUnitTest, model.StageUnitTest, model.StageUnitTest, model.StagePackage},
		s.stageNames())
	s.env.AssertActivityNumberOfCalls(s.T(), "RunStage", 5)
	s.Equal(model.StatusSuccess, s.finished().status)
}

// TestInfrastructureErrorGivesUp: the retries are bounded (8 attempts), then the
// record fails with a message that names the stage but not the infrastructure's
// internals (those stay in the history for operators).
func (s *RecordSuite) TestInfrastructureErrorGivesUp() {
	s.runStage = func(_ context.Context, in activities.StageInput) error {
		return errors.New("docker: connection refused")
	}
	s.Error(s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest)))

	s.Equal(slices.Repeat([]string{model.StageCodeCheckout}, 8), s.stageNames())
	s.Equal(model.StatusFailed, s.finished().status)
	s.Equal("codeCheckout: infrastructure error, retries exhausted (details in the run's Temporal history)", s.finished().message)
	s.NotContains(s.finished().message, "connection refused")
	s.Equal([]string{stageQueue}, s.teardown)
}

// TestStepFailedIsNotRetried: StepFailed and NotImplemented are final: one attempt.
func (s *RecordSuite) TestStepFailedIsNotRetried() {
	for _, errType := range []string{activities.ErrTypeStepFailed, activities.ErrTypeNotImplemented} {
		s.Run(errType, func() {
			s.SetupTest()
			s.runStage = func(context.Context, activities.StageInput) error {
				// Retryable as far as the error itself goes: only the workflow's retry
				// policy (NonRetryableErrorTypes) can stop the retries.
				return temporal.NewApplicationError("nope", errType)
			}
			s.Error(s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest)))
			s.env.AssertActivityNumberOfCalls(s.T(), "RunStage", 1)
			s.Equal(model.StatusFailed, s.finished().status)
			s.Equal("codeCheckout: nope", s.finished().message)
		})
	}
}

// TestCancelMidStage: cancelling the workflow while a stage runs marks the record
// Aborted, still tears the environment down (before the record is finished), runs no
// further stage and ends the workflow canceled. The stage sees its context cancelled
// once it heartbeats, as the real RunStage does.
func (s *RecordSuite) TestCancelMidStage() {
	entered := make(chan struct{})
	ctxDone := make(chan struct{})
	cancelSeen := make(chan struct{})
	release := make(chan struct{})
	s.T().Cleanup(func() { close(release) })
	s.env.SetOnActivityCanceledListener(func(info *activity.Info) {
		if info.ActivityType.Name == "RunStage" {
			close(cancelSeen)
		}
	})
	s.runStage = func(ctx context.Context, in activities.StageInput) error {
		if in.Stage != model.StageUnitTest {
			return nil
		}
		close(entered)
		select {
		case <-cancelSeen:
			// The test environment delivers the cancellation through the heartbeat's
			// answer (the first heartbeat is sent at once, later ones are batched).
			activity.RecordHeartbeat(ctx, "running")
		case <-release:
			return errors.New("cancellation never reached the stage")
		}
		select {
		case <-ctx.Done():
			close(ctxDone)
			return temporal.NewCanceledError("step cancelled")
		case <-release:
			return errors.New("stage context not cancelled")
		}
	}
	s.cancelOnce(entered)

	err := s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest, model.StagePackage))

	s.True(temporal.IsCanceledError(err), "workflow error %v is not a cancellation", err)
	select {
	case <-entered:
	default:
		s.Fail("the unitTest stage never started")
	}
	s.Equal([]string{
		"RecordStarted", "SetupEnvironment", "RunStage:codeCheckout", "RunStage:unitTest",
		"TeardownEnvironment", "FinishRecord:" + model.StatusAborted,
	}, s.calls())
	s.Equal(model.StatusAborted, s.finished().status)
	s.Equal([]string{stageQueue}, s.teardown)
	select {
	case <-ctxDone:
	case <-time.After(10 * time.Second):
		s.Fail("the running stage's context was never cancelled")
	}
}

// TestCancelDuringSetup: a cancellation that lands during the record's setup starts
// no stage and marks the record Aborted.
func (s *RecordSuite) TestCancelDuringSetup() {
	entered := make(chan struct{})
	release := make(chan struct{})
	s.T().Cleanup(func() { close(release) })
	s.setup = func(ctx context.Context, rec executor.Record) (activities.Environment, error) {
		close(entered)
		select {
		case <-ctx.Done():
		case <-release:
		}
		return activities.Environment{}, ctx.Err()
	}
	s.cancelOnce(entered)

	err := s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest))
	s.True(temporal.IsCanceledError(err), "workflow error %v is not a cancellation", err)
	s.Empty(s.stageNames())
	s.Equal(model.StatusAborted, s.finished().status)
	s.Empty(s.finished().message)
}

// TestSetupFailure: an environment that cannot be set up fails the record with a
// message about the environment, after its retries, and runs no stage and no
// teardown (there is nothing to tear down).
func (s *RecordSuite) TestSetupFailure() {
	s.setup = func(context.Context, executor.Record) (activities.Environment, error) {
		return activities.Environment{}, errors.New("set up environment: docker network create: no space left")
	}
	err := s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest))

	s.Error(err)
	s.Empty(s.stageNames())
	s.env.AssertActivityNotCalled(s.T(), "RunStage", mock.Anything, mock.Anything)
	s.env.AssertActivityNumberOfCalls(s.T(), "SetupEnvironment", 5)
	f := s.finished()
	s.Equal(model.StatusFailed, f.status)
	s.Contains(f.message, "environment")
	s.NotContains(f.message, "no space left") // an infrastructure detail: in the history, not the record
	s.Empty(s.teardown)
}

// TestSetupFailureNotRetriedWhenFinal: a non-retryable setup error is not retried.
func (s *RecordSuite) TestSetupFailureNotRetriedWhenFinal() {
	s.setup = func(context.Context, executor.Record) (activities.Environment, error) {
		return activities.Environment{}, temporal.NewNonRetryableApplicationError("no executor", activities.ErrTypeStepFailed, nil)
	}
	s.Error(s.run(recordInput(model.StageCodeCheckout)))
	s.env.AssertActivityNumberOfCalls(s.T(), "SetupEnvironment", 1)
	s.Equal("set up the record's environment: no executor", s.finished().message)
}

// TestStagesRunOnEnvironmentQueue: setup runs on the workflow's task queue; every
// stage attempt and the teardown go to the task queue SetupEnvironment returned,
// and every stage gets the environment setup made.
func (s *RecordSuite) TestStagesRunOnEnvironmentQueue() {
	var envs []executor.Environment
	s.runStage = func(ctx context.Context, in activities.StageInput) error {
		s.mu.Lock()
		envs = append(envs, in.Env)
		s.mu.Unlock()
		if in.Stage == model.StageUnitTest && activity.GetInfo(ctx).Attempt == 1 {
			return errors.New("flaky engine")
		}
		return nil
	}
	s.NoError(s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest)))

	s.Require().Len(s.stages, 3)
	for _, c := range s.stages {
		s.Equal(stageQueue, c.taskQueue, "stage %s attempt %d", c.stage, c.attempt)
	}
	for _, e := range envs {
		s.Equal("/ws/rec-1", e.Workspace)
	}
	s.Equal([]string{stageQueue}, s.teardown)
	s.Require().Len(s.setupQ, 1)
	s.NotEqual(stageQueue, s.setupQ[0])
}

// TestTeardownFailureDoesNotFailRecord: a teardown that keeps failing is retried a
// bounded number of times and does not change the record's outcome.
func (s *RecordSuite) TestTeardownFailureDoesNotFailRecord() {
	s.teardownErr = errors.New("docker: connection refused")
	s.NoError(s.run(recordInput(model.StageCodeCheckout)))
	s.Equal(slices.Repeat([]string{stageQueue}, 8), s.teardown)
	s.Equal(model.StatusSuccess, s.finished().status)
}

// TestLocalEnvironment: the environment is set up by a local activity; when the
// stages run on the workflow's own task queue (a single worker) it is torn down by
// one too, and otherwise by an activity on the environment's queue.
func (s *RecordSuite) TestLocalEnvironment() {
	s.NoError(s.run(recordInput(model.StageCodeCheckout)))
	s.Equal([]bool{true}, s.localSetup)
	s.Equal([]bool{false}, s.localTeardown)
	s.Equal([]string{stageQueue}, s.teardown)
}

func (s *RecordSuite) TestLocalTeardownOnWorkflowQueue() {
	s.setup = func(ctx context.Context, rec executor.Record) (activities.Environment, error) {
		return activities.Environment{
			Env:       executor.Environment{Record: rec, Workspace: "/ws/" + rec.ID},
			TaskQueue: activity.GetInfo(ctx).TaskQueue, // the single worker's queue
		}, nil
	}
	s.NoError(s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest)))
	s.Equal([]bool{true}, s.localSetup)
	s.Equal([]bool{true}, s.localTeardown)
	s.Equal([]string{"RecordStarted", "SetupEnvironment", "RunStage:codeCheckout", "RunStage:unitTest",
		"TeardownEnvironment", "FinishRecord:" + model.StatusSuccess}, s.calls())
	s.Equal(model.StatusSuccess, s.finished().status)
}

// TestNamedAtStartWithoutCheckout: a record without a name of its own that checks
// no commit out is named by its start time when it starts, and FinishRecord is not
// asked to name it again; one that checks out still is, in case no commit names it.
func (s *RecordSuite) TestNamedAtStartWithoutCheckout() {
	s.NoError(s.run(recordInput(model.StageUnitTest, model.StagePackage)))
	s.Require().Len(s.started, 1)
	s.Equal("260102030405", s.started[0].Name)
	s.Equal(model.TriggerUser, s.started[0].Trigger)
	s.False(s.finished().nameFromTime)
}

func (s *RecordSuite) TestNotNamedAtStartWithCheckout() {
	s.NoError(s.run(recordInput(model.StageCodeCheckout, model.StageUnitTest)))
	s.Require().Len(s.started, 1)
	s.Empty(s.started[0].Name)
	s.True(s.finished().nameFromTime)
}

// scheduledRun runs a record the way a cron's schedule starts it (no record ID: the
// workflow creates the record), with the start's search attributes, and returns how
// many times the workflow upserted search attributes.
func (s *RecordSuite) scheduledRun(attrs temporal.SearchAttributes) int {
	a := &activities.Activities{}
	s.env.OnActivity(a.CreateScheduledRecord, mock.Anything, mock.Anything).Return(nil)
	upserts := 0
	s.env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(mock.Arguments) { upserts++ }).Maybe()
	s.Require().NoError(s.env.SetTypedSearchAttributesOnStart(attrs))
	s.env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: "rec-1"}) // the record's ID
	in := recordInput(model.StageUnitTest)
	in.RecordID, in.Trigger = "", model.TriggerCron
	s.Require().NoError(s.run(in))
	return upserts
}

// TestScheduledRecordWithoutSearchAttributes: on a namespace without Cyclone's search
// attributes the schedule starts its runs without them, and the workflow must not
// upsert CycloneRecord either (on a real server that fails every workflow task).
func (s *RecordSuite) TestScheduledRecordWithoutSearchAttributes() {
	s.Equal(0, s.scheduledRun(temporal.NewSearchAttributes()))
}

// TestScheduledRecordNamesItsRecord: with the attributes, the run adds CycloneRecord,
// its record's ID (the schedule cannot know it in advance).
func (s *RecordSuite) TestScheduledRecordNamesItsRecord() {
	s.Equal(1, s.scheduledRun(temporal.NewSearchAttributes(searchattr.Pipeline.ValueSet("app"))))
}
