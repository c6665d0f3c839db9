// Package workflows holds the PipelineRecord workflow: which stages run, in which
// order, what a failure or a cancellation does, and the cleanup that always happens.
//
// Workflow code here is deterministic: no I/O, no wall clock, no map iteration for
// order. Everything that touches the world is an activity in package activities.
package workflows

import (
	"errors"
	"fmt"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/searchattr"
)

// RecordWorkflowName is the registered name of the PipelineRecord workflow.
const RecordWorkflowName = "PipelineRecord"

// Timeouts of the engine's own work around the stages.
const (
	projectionTimeout = 30 * time.Second
	// projectionRetryWindow keeps a record's projection write retrying through a
	// MongoDB outage instead of losing it.
	projectionRetryWindow = 24 * time.Hour
	setupTimeout          = 10 * time.Minute
	heartbeatTimeout      = 20 * time.Second
	// workerPickupTimeout bounds how long a stage waits for the record's worker; a
	// worker that never comes back fails the record instead of leaving it Running.
	workerPickupTimeout = 10 * time.Minute
	// scmTimeout bounds one call to the SCM (a tag, a commit status).
	scmTimeout = time.Minute
)

// PipelineRecord runs one pipeline record. The workflow ID is the record ID.
func PipelineRecord(ctx workflow.Context, in activities.RecordInput) error {
	var a *activities.Activities
	info := workflow.GetInfo(ctx)

	projection := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout:    projectionTimeout,
		ScheduleToCloseTimeout: projectionRetryWindow,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaximumInterval: 30 * time.Second},
	})
	if in.RecordID == "" {
		// Started by a cron's schedule: the record is this run, named by its workflow
		// ID (unique per scheduled time), and is created here.
		in.RecordID, in.StartTime = info.WorkflowExecution.ID, workflow.Now(ctx).UTC()
		// The schedule sets the other attributes only when the namespace has them
		// (an upsert of an unregistered one would fail every workflow task).
		if workflow.GetTypedSearchAttributes(ctx).ContainsKey(searchattr.Pipeline) {
			if err := workflow.UpsertTypedSearchAttributes(ctx, searchattr.Record.ValueSet(in.RecordID)); err != nil {
				return err
			}
		}
		if err := workflow.ExecuteLocalActivity(projection, a.CreateScheduledRecord, in).Get(ctx, nil); err != nil {
			return err
		}
	}
	var status, message string
	// Records wait for room on their cloud before they start (issue 8, capacity).
	queued := changed(ctx, in, CapacityQueueChange)
	// From LocalEnvironmentChange on, the record asks its cloud's limit first (a
	// local activity) and waits only on a limited cloud, and its environment is set
	// up (and, on the workflow's own queue, torn down) by local activities.
	local := queued && changed(ctx, in, LocalEnvironmentChange)
	waited := queued
	if local {
		var limit int
		err := workflow.ExecuteLocalActivity(projection, a.CloudLimit, in.Cloud).Get(ctx, &limit)
		switch {
		case err != nil && isCancel(ctx):
			status, waited = model.StatusAborted, false
		case err != nil || limit > 0:
			// A limited cloud (or one whose limit is not known): wait as before.
			status, message = waitForRoom(ctx, in)
		default:
			// No limit: the record runs at once and takes no place, as AcquireSlot
			// would have decided; there is nothing to give back either.
			waited = false
		}
	} else if queued {
		status, message = waitForRoom(ctx, in)
	}
	// A record without a name of its own is named by its checked out commit, or
	// else by its start time.
	nameFromTime := in.Params.Name == ""
	// carried are stage outcomes the stages left to FinishRecord.
	var carried []model.StageUpdate
	if status == "" {
		var started workflow.Future
		var name string
		if local {
			// What RecordStarted read back from the record comes with the input. A
			// record that checks no commit out is named by its start time now,
			// rather than by a read and a write when it finishes.
			req := activities.StartRequest{RecordID: in.RecordID, RunID: info.WorkflowExecution.RunID,
				ProjectID: in.ProjectID, PipelineID: in.PipelineID, Trigger: in.Trigger}
			if nameFromTime && !in.StartTime.IsZero() && !slices.Contains(in.Stages, model.StageCodeCheckout) {
				req.Name = activities.TimeName(in.StartTime)
			}
			name = req.Name
			started = workflow.ExecuteLocalActivity(projection, a.StartRecord, req)
		} else {
			started = workflow.ExecuteLocalActivity(projection, a.RecordStarted, in.RecordID, info.WorkflowExecution.RunID)
		}
		if in.Generation < 1 {
			// Records before generations were marked Running before their setup
			// began; later ones are set up meanwhile (runStages waits for both).
			if err := started.Get(ctx, nil); err != nil {
				if !isCancel(ctx) {
					return err
				}
				status = model.StatusAborted
			}
			started = nil
		}
		if status == "" {
			nameFromTime = nameFromTime && name == ""
			status, message, carried = runStages(ctx, in, local, started)
		}
	}
	if waited {
		// The environment is torn down: the next record may start. A failed release
		// is pruned by whoever waits behind this record.
		releaseCtx, _ := workflow.NewDisconnectedContext(projection)
		_ = workflow.ExecuteLocalActivity(releaseCtx, a.ReleaseSlot, in.RecordID).Get(releaseCtx, nil)
	}

	status, message = scmFollowUp(ctx, in, status, message)

	// Whatever happened, record the outcome, even when the workflow was cancelled.
	finishCtx, _ := workflow.NewDisconnectedContext(projection)
	if err := workflow.ExecuteLocalActivity(finishCtx, a.FinishRecord, in.RecordID, status, message, nameFromTime, carried).Get(finishCtx, nil); err != nil {
		return err
	}
	switch status {
	case model.StatusAborted:
		return temporal.NewCanceledError("record aborted")
	case model.StatusFailed:
		return temporal.NewNonRetryableApplicationError(message, "RecordFailed", nil)
	}
	return nil
}

// scmFollowUp tags the commit of a successful record that asked for it (a refused
// tag fails the record) and shows the record's final status on its commit. Both
// run even when the record was aborted (a disconnected context).
func scmFollowUp(ctx workflow.Context, in activities.RecordInput, status, message string) (string, string) {
	tag := in.Params.CreateSCMTag && status == model.StatusSuccess
	if !tag && !in.CommitStatus {
		return status, message
	}
	if !changed(ctx, in, scmFollowUpChange) {
		return status, message
	}
	var a *activities.Activities
	scmCtx, _ := workflow.NewDisconnectedContext(ctx)
	scmCtx = workflow.WithActivityOptions(scmCtx, workflow.ActivityOptions{
		StartToCloseTimeout: scmTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, MaximumInterval: 30 * time.Second, MaximumAttempts: 6,
			NonRetryableErrorTypes: []string{activities.ErrTypeSCM},
		},
	})
	if tag {
		if err := workflow.ExecuteActivity(scmCtx, a.CreateSCMTag, in).Get(scmCtx, nil); err != nil {
			status, message = model.StatusFailed, errMessage(err)
		}
	}
	if in.CommitStatus {
		if err := workflow.ExecuteActivity(scmCtx, a.ReportCommitStatus, in, status).Get(scmCtx, nil); err != nil {
			workflow.GetLogger(ctx).Warn("commit status not reported", "error", err)
		}
	}
	return status, message
}

// scmFollowUpChange is the workflow.GetVersion change ID from which a record tags
// its commit and reports its status to the SCM.
const scmFollowUpChange = "scm-tag-and-commit-status"

// changed says whether the record runs with the change (a workflow.GetVersion
// change ID with versions DefaultVersion and 1): a record of a generation
// (activities.RecordGeneration) does, without a marker; an older one asks.
func changed(ctx workflow.Context, in activities.RecordInput, changeID string) bool {
	if in.Generation >= 1 {
		return true
	}
	return workflow.GetVersion(ctx, changeID, workflow.DefaultVersion, 1) == 1
}

// CapacityQueueChange is the workflow.GetVersion change ID of the capacity queue:
// from version 1 on, a record waits for room on its cloud before it starts.
const CapacityQueueChange = "capacity-queue"

// LocalEnvironmentChange is the workflow.GetVersion change ID from which a record
// checks its cloud's limit with a local activity (and waits for room only when
// there is one), sets its environment up with a local activity, and tears it down
// with one when its stages run on the workflow's own task queue (a single worker).
const LocalEnvironmentChange = "local-environment"

// slotWaitTimeout bounds one attempt at waiting for room; the wait itself is
// retried without end, so a long queue never fails a record.
const slotWaitTimeout = 7 * 24 * time.Hour

// slotHeartbeatTimeout is short so that a record aborted while it waits hears of it
// within seconds.
const slotHeartbeatTimeout = 5 * time.Second

// waitForRoom returns once the record may run on its cloud, or Aborted when the
// record was cancelled while it waited.
func waitForRoom(ctx workflow.Context, in activities.RecordInput) (status, message string) {
	var a *activities.Activities
	slotCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           activities.SlotTaskQueue(workflow.GetInfo(ctx).TaskQueueName),
		StartToCloseTimeout: slotWaitTimeout,
		HeartbeatTimeout:    slotHeartbeatTimeout,
		// The activity writes the record's queue position: it must have stopped
		// before the slot is released and the record finished.
		WaitForCancellation: true,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second},
	})
	err := workflow.ExecuteActivity(slotCtx, a.AcquireSlot, activities.SlotRequest{RecordID: in.RecordID, ProjectID: in.ProjectID, Cloud: in.Cloud, Created: in.StartTime}).Get(ctx, nil)
	switch {
	case err == nil:
		return "", ""
	case isCancel(ctx):
		return model.StatusAborted, ""
	}
	return model.StatusFailed, "wait for room on the cloud: " + errMessage(err)
}

// runStages sets up the record's environment, runs the stages and tears the
// environment down. It returns the record's final status and error message.
//
// With local set (LocalEnvironmentChange), a record of the default cloud is set up
// by a local activity: on the worker running the workflow task, which hands its own
// task queue to the stages exactly as a SetupEnvironment activity picked up by any
// worker would, without a round trip through the server.
//
// started, when not nil, is the record's Running mark still being written: the
// stages wait for it and for the setup, which go on meanwhile.
//
// carried are the stage outcomes left to FinishRecord (see
// activities.StageInput.CarryOutcome).
func runStages(ctx workflow.Context, in activities.RecordInput, local bool, started workflow.Future) (status, message string, carried []model.StageUpdate) {
	var a *activities.Activities
	setupRetry := &temporal.RetryPolicy{MaximumAttempts: 5}
	setupCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: setupTimeout,
		RetryPolicy:         setupRetry,
		// A cancel during setup must wait for it, so the teardown below sees what
		// setup made instead of leaking it.
		WaitForCancellation: true,
	})
	workflowQueue := workflow.GetInfo(ctx).TaskQueueName
	cloudQueue := in.SetupTaskQueue(workflowQueue)
	if cloudQueue != "" {
		// A worker serving the project's cloud sets the environment up; the
		// stages follow it there. None coming fails the record, saying so.
		setupCtx = workflow.WithTaskQueue(setupCtx, cloudQueue)
		setupCtx = workflow.WithScheduleToStartTimeout(setupCtx, workerPickupTimeout)
	}
	var setup workflow.Future
	if local && cloudQueue == "" {
		// A local activity's cancellation waits for it to return, as
		// WaitForCancellation does above.
		setup = workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			StartToCloseTimeout: setupTimeout,
			RetryPolicy:         setupRetry,
		}), a.SetupEnvironment, in.ExecutorRecord())
	} else {
		setup = workflow.ExecuteActivity(setupCtx, a.SetupEnvironment, in.ExecutorRecord())
	}
	var env activities.Environment
	setupErr := setup.Get(ctx, &env)
	if started != nil {
		if err := started.Get(ctx, nil); err != nil && setupErr == nil {
			defer teardown(ctx, in, env, local)
			if isCancel(ctx) {
				return model.StatusAborted, "", nil
			}
			return model.StatusFailed, "mark the record running: " + errMessage(err), nil
		}
	}
	if err := setupErr; err != nil {
		var timeout *temporal.TimeoutError
		switch {
		case isCancel(ctx):
			return model.StatusAborted, "", nil
		case cloudQueue != "" && errors.As(err, &timeout) && timeout.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START:
			return model.StatusFailed, fmt.Sprintf("no worker serves the cloud %q (start one with --cloud %s)", in.Cloud, in.Cloud), nil
		}
		return model.StatusFailed, "set up the record's environment: " + errMessage(err), nil
	}

	stageCtx := workflow.WithActivityOptions(ctx, stageOptions(in, env))
	defer teardown(ctx, in, env, local)

	integrationTestPassed := false
	// deferred are the outcomes of stages that succeeded, until a later stage has
	// written them (they are handed on until then, and FinishRecord writes them at
	// last; writing one twice is harmless).
	var deferred []model.StageUpdate
	for _, stage := range in.Stages {
		input := activities.StageInput{Record: in, Env: env.Env, Stage: stage, IntegrationTestPassed: integrationTestPassed,
			CarryOutcome: true, Deferred: deferred}
		var outcomes []model.StageUpdate
		err := workflow.ExecuteActivity(stageCtx, a.RunStage, input).Get(ctx, &outcomes)
		switch {
		case err == nil:
			// What the stage could not write comes back: its own success, and the
			// earlier outcomes when writing them failed.
			deferred = outcomes
			if stage == model.StageIntegrationTest {
				integrationTestPassed = true
			}
			continue
		case isCancel(ctx):
			return model.StatusAborted, "", deferred
		case in.Build.Stages.AllowFailure(stage):
			workflow.GetLogger(ctx).Info("stage failed, allowed to fail", "stage", stage)
			continue
		default:
			return model.StatusFailed, stage + ": " + errMessage(err), deferred
		}
	}
	return model.StatusSuccess, "", deferred
}

// stageOptions are the options of the record's stage activities: every stage runs
// on the worker holding the record's workspace.
func stageOptions(in activities.RecordInput, env activities.Environment) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		TaskQueue:              env.TaskQueue,
		StartToCloseTimeout:    in.StageTimeout,
		ScheduleToStartTimeout: workerPickupTimeout,
		HeartbeatTimeout:       heartbeatTimeout,
		WaitForCancellation:    true,
		RetryPolicy: &temporal.RetryPolicy{
			// About two minutes of retries: enough to ride out a store or engine
			// restart between two stages.
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    30 * time.Second,
			MaximumAttempts:    8,
			// A user's failing command, a stage not built yet, or a stage that ran
			// past the pipeline's timeout are final; anything else is retried.
			NonRetryableErrorTypes: []string{activities.ErrTypeStepFailed, activities.ErrTypeNotImplemented, "TemporalTimeout:StartToClose"},
		},
	}
}

// teardown removes the record's environment, even when the record was cancelled.
func teardown(ctx workflow.Context, in activities.RecordInput, env activities.Environment, local bool) {
	var a *activities.Activities
	teardownCtx, _ := workflow.NewDisconnectedContext(workflow.WithActivityOptions(ctx, stageOptions(in, env)))
	if local && env.TaskQueue == workflow.GetInfo(ctx).TaskQueueName {
		// The stages ran on the workflow's own queue: any worker running this
		// workflow holds the environment, this one included.
		teardownCtx = workflow.WithLocalActivityOptions(teardownCtx, workflow.LocalActivityOptions{
			StartToCloseTimeout: setupTimeout,
			RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second, MaximumAttempts: 8},
		})
		_ = workflow.ExecuteLocalActivity(teardownCtx, a.TeardownEnvironment, env.Env).Get(teardownCtx, nil)
		return
	}
	teardownCtx = workflow.WithHeartbeatTimeout(teardownCtx, 0)
	teardownCtx = workflow.WithStartToCloseTimeout(teardownCtx, setupTimeout)
	_ = workflow.ExecuteActivity(teardownCtx, a.TeardownEnvironment, env.Env).Get(teardownCtx, nil)
}

// isCancel reports whether the record was cancelled. It looks at the workflow's own
// context, not at the error: an activity may return a CanceledError for other
// reasons (paused, reset), and that is a failure, not an abort.
func isCancel(ctx workflow.Context) bool {
	return errors.Is(ctx.Err(), workflow.ErrCanceled)
}

// infrastructureMessage is what the record says about a failure that is not the
// user's.
const infrastructureMessage = "infrastructure error, retries exhausted (details in the run's Temporal history)"

// errMessage is what the record says about a failed activity. A user's failure
// (a command's exit code, a missing ref) is told as is; an infrastructure error is
// not, because its text names the engine's hosts and internals: operators find it in
// the workflow's history.
func errMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		switch appErr.Type() {
		case activities.ErrTypeStepFailed, activities.ErrTypeNotImplemented, activities.ErrTypeSCM:
			return appErr.Message()
		}
		return infrastructureMessage
	}
	var timeoutErr *temporal.TimeoutError
	if errors.As(err, &timeoutErr) {
		return "timed out (" + timeoutErr.TimeoutType().String() + ")"
	}
	var actErr *temporal.ActivityError
	if errors.As(err, &actErr) {
		// Any other failure of an activity (a panic, a local activity's plain
		// error) is the infrastructure's too.
		return infrastructureMessage
	}
	return err.Error()
}
