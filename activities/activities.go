// Package activities does the work of a pipeline record for the PipelineRecord
// workflow: it writes the record's projection to the store, sets up and tears down
// the record's environment on an executor, and runs each stage.
//
// Stage activities run on the worker that holds the record's workspace (its own task
// queue), heartbeat while their step runs, and turn a step that exits non-zero into a
// non-retryable error: a user's failing test is not retried, a dead Docker engine is.
package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/metrics"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// Error types the workflow's retry policy treats as final.
const (
	ErrTypeStepFailed     = "StepFailed"
	ErrTypeNotImplemented = "NotImplemented"
)

// Store is what the activities need from persistence.
type Store interface {
	CreateRecord(ctx context.Context, r *model.Record) error
	SetRecordRunning(ctx context.Context, id, runID, name string) error
	UpdateStage(ctx context.Context, id string, u model.StageUpdate) error
	FinishRecordWith(ctx context.Context, id, status, errorMessage string, end time.Time, stages []model.StageUpdate) error
	GetRecordByID(ctx context.Context, id string) (*model.Record, error)
	ProjectCredentials(ctx context.Context, projectID string) (*store.Credentials, error)
	PipelineSecrets(ctx context.Context, pipelineID string) (*store.PipelineSecrets, error)
}

// LogSink opens the log of one stage (or task) of a record: the writer masks the
// target's secrets and appends after what an earlier attempt stored.
type LogSink interface {
	OpenLog(ctx context.Context, t logs.Target) (io.WriteCloser, error)
}

// Activities holds the dependencies of every activity. Register it with a worker as
// a whole; the workflow calls its methods through a nil *Activities.
type Activities struct {
	Store    Store
	Executor executor.Executor
	Logs     LogSink
	// TaskQueue is this worker's own queue; the record's stages are sent there so they
	// find the workspace Setup made.
	TaskQueue string
	// HeartbeatInterval paces heartbeats while a step runs (default 1s).
	HeartbeatInterval time.Duration
	// Now is the clock (tests may replace it).
	Now func() time.Time
	// Logger logs what happens to records and stages (default slog.Default()).
	Logger *slog.Logger
	// Metrics counts records and times stages; nil records nothing.
	Metrics *metrics.Metrics

	// Slots keeps the clouds' queues; nil: records never wait for room.
	Slots SlotStore
	// MaxRunningRecords bounds the records running at once on a cloud that sets no
	// limit of its own (0: no limit).
	MaxRunningRecords int
	// SlotPoll paces a waiting record's looks at its queue (default 1s).
	SlotPoll time.Duration

	// SCM opens a project's SCM for tags and commit statuses; nil: neither.
	SCM SCMOpener
	// PublicURL is the API's address as SCM users reach it, for links back to records.
	PublicURL string

	secrets secretCache // a record's secrets, opened once for its stages

	// Sonar runs the codeScan stage's SonarQube scans.
	Sonar SonarScan

	// CheckoutImage runs the codeCheckout stage as a step when the executor's
	// workspace is not on this host (Kubernetes); default DefaultCheckoutImage.
	CheckoutImage string
}

func (a *Activities) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// recordLogger logs with the record's project, pipeline (names, as in the API's
// paths) and IDs.
func (a *Activities) recordLogger(in RecordInput) *slog.Logger {
	return a.logger().With("project", in.Project, "pipeline", in.Pipeline, "record", in.RecordID,
		"projectID", in.ProjectID, "pipelineID", in.PipelineID)
}

func (a *Activities) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now().UTC()
}

// RecordInput is everything the workflow needs to run a record. It carries a
// snapshot of the pipeline's build (without secrets), so editing the pipeline does not
// change a run in flight.
type RecordInput struct {
	RecordID     string              `json:"recordID"`
	ProjectID    string              `json:"projectID"`
	PipelineID   string              `json:"pipelineID"`
	Project      string              `json:"project"`
	Pipeline     string              `json:"pipeline"`
	Trigger      string              `json:"trigger"`
	Params       model.PerformParams `json:"params"`
	Stages       []string            `json:"stages"`
	Build        *model.Build        `json:"build"`
	StageTimeout time.Duration       `json:"stageTimeout"`
	StartTime    time.Time           `json:"startTime"`
	// CommitStatus asks for the record's status to be shown on its commit (records
	// an SCM event started on GitHub or GitLab).
	CommitStatus bool `json:"commitStatus,omitempty"`
	// Quota is the project's worker quota when the record started ("requests.cpu":
	// "500m", ...), which sizes every step (executor.Step.Resources).
	Quota map[string]string `json:"quota,omitempty"`
	// Cloud is the cloud the project's records run on ("" or model.DefaultCloudName:
	// any worker); the record's environment is set up by a worker serving it.
	Cloud string `json:"cloud,omitempty"`
	// Generation is the PipelineRecord behaviour the record was started for (see
	// RecordGeneration); 0 for records started before generations: the workflow
	// then asks workflow.GetVersion, as those records did.
	Generation int `json:"generation,omitempty"`
	// Namespace is the Kubernetes namespace of the record's pods and workspace claim
	// (the project's worker.location.namespace, else its Kubernetes cloud's); ""
	// (and every record started before it existed) is the executor's default.
	Namespace string `json:"namespace,omitempty"`
}

// RecordGeneration is the Generation of the records started now. A record of a
// generation runs as the workflow's GetVersion changes up to that generation
// decided for it, without asking: asking records a marker and upserts the
// TemporalChangeVersion search attribute (a visibility write) per change and record.
// Generation 1 stands for version 1 of "capacity-queue", "local-environment" and
// "scm-tag-and-commit-status". A new incompatible change takes a GetVersion of its
// own; a generation may cover it once no record of an older one runs.
const RecordGeneration = 1

// SlotTaskQueue is the task queue where records wait for room on their cloud
// (AcquireSlot): its own, so that waiting records never take the places of the
// stages of running ones.
func SlotTaskQueue(shared string) string { return shared + "-slots" }

// CloudTaskQueue is the task queue the workers serving a cloud poll, beside the
// shared one: the environment of a record on that cloud is set up there.
func CloudTaskQueue(shared, cloud string) string { return shared + "-cloud-" + cloud }

// SetupTaskQueue is where the record's environment is set up: the cloud's queue,
// or "" (the workflow's own) for the default cloud.
func (in RecordInput) SetupTaskQueue(shared string) string {
	if in.Cloud == "" || in.Cloud == model.DefaultCloudName {
		return ""
	}
	return CloudTaskQueue(shared, in.Cloud)
}

// ExecutorRecord identifies the record to an executor, with the namespace its
// environment goes to.
func (in RecordInput) ExecutorRecord() executor.Record {
	return executor.Record{ID: in.RecordID, Project: in.Project, Pipeline: in.Pipeline, Namespace: in.Namespace}
}

// Environment is what SetupEnvironment made: the executor's environment and the task
// queue of the worker that holds it.
type Environment struct {
	Env       executor.Environment `json:"env"`
	TaskQueue string               `json:"taskQueue"`
}

// StageInput asks for one stage of a record.
type StageInput struct {
	Record RecordInput          `json:"record"`
	Env    executor.Environment `json:"env"`
	Stage  string               `json:"stage"`
	// IntegrationTestPassed says this record's integrationTest stage succeeded, for
	// imageRelease's IntegrationTestSuccess policy.
	IntegrationTestPassed bool `json:"integrationTestPassed,omitempty"`
	// CarryOutcome says the workflow carries a successful stage's outcome on (it
	// comes back from RunStage instead of being written), so that writing it is not
	// between the step and the next stage: the next stage writes it while its own
	// step runs (Deferred), or FinishRecord does.
	CarryOutcome bool `json:"carryOutcome,omitempty"`
	// Deferred are earlier stages' outcomes not written yet, oldest first (see
	// CarryOutcome).
	Deferred []model.StageUpdate `json:"deferred,omitempty"`
}

// CreateScheduledRecord writes the record of a run a cron's schedule started (a
// retry finds it already there).
func (a *Activities) CreateScheduledRecord(ctx context.Context, in RecordInput) error {
	params := in.Params
	err := a.Store.CreateRecord(ctx, &model.Record{
		ID: in.RecordID, ProjectID: in.ProjectID, PipelineID: in.PipelineID, Trigger: in.Trigger,
		PerformParams: &params, StageStatus: &model.StageStatus{}, Status: model.StatusPending,
		StartTime: in.StartTime, WorkflowID: in.RecordID,
	})
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

// RecordStarted marks the record Running with the run that executes it.
func (a *Activities) RecordStarted(ctx context.Context, recordID, runID string) error {
	if err := a.Store.SetRecordRunning(ctx, recordID, runID, ""); err != nil {
		return err
	}
	logger := a.logger().With("record", recordID)
	if a.Metrics != nil {
		// The trigger label costs a read, made only when metrics are on.
		trigger := ""
		if r, err := a.Store.GetRecordByID(ctx, recordID); err == nil {
			trigger = r.Trigger
			logger = logger.With("projectID", r.ProjectID, "pipelineID", r.PipelineID, "trigger", r.Trigger)
		}
		a.Metrics.RecordStarted(trigger)
	}
	logger.Info("record started", "runID", runID)
	return nil
}

// StartRequest marks a record Running (StartRecord).
type StartRequest struct {
	RecordID   string `json:"recordID"`
	RunID      string `json:"runID"`
	ProjectID  string `json:"projectID"`
	PipelineID string `json:"pipelineID"`
	Trigger    string `json:"trigger"`
	// Name, when set, names the record (a record that checks no commit out is
	// named by its start time from the start: see TimeName).
	Name string `json:"name,omitempty"`
}

// TimeName is the name of a record that checked no commit out: its start time.
func TimeName(start time.Time) string { return start.UTC().Format("060102150405") }

// StartRecord marks the record Running with the run that executes it, as
// RecordStarted does, and names it when asked; what it logs and counts comes from
// the request, not from a read of the record.
func (a *Activities) StartRecord(ctx context.Context, req StartRequest) error {
	if err := a.Store.SetRecordRunning(ctx, req.RecordID, req.RunID, req.Name); err != nil {
		return err
	}
	a.Metrics.RecordStarted(req.Trigger)
	a.logger().Info("record started", "record", req.RecordID, "runID", req.RunID,
		"projectID", req.ProjectID, "pipelineID", req.PipelineID, "trigger", req.Trigger)
	return nil
}

// FinishRecord puts the record in its final state, with the stage outcomes not
// written yet (see StageInput.CarryOutcome). When nameFromTime is set and the record
// has no name yet (no commit was checked out), it is named by its start time.
func (a *Activities) FinishRecord(ctx context.Context, recordID, status, message string, nameFromTime bool, stages []model.StageUpdate) error {
	err := a.finishRecord(ctx, recordID, status, message, nameFromTime, stages)
	if errors.Is(err, store.ErrNotFound) {
		err = nil // the record was deleted while it ran: nothing left to project
	}
	if err == nil {
		a.Metrics.RecordFinished(status)
		a.logger().Info("record finished", "record", recordID, "status", status)
	}
	return err
}

func (a *Activities) finishRecord(ctx context.Context, recordID, status, message string, nameFromTime bool, stages []model.StageUpdate) error {
	if nameFromTime {
		r, err := a.Store.GetRecordByID(ctx, recordID)
		if err != nil {
			return err
		}
		if r.Name == "" && !model.IsTerminal(r.Status) {
			if err := a.Store.SetRecordRunning(ctx, recordID, "", TimeName(r.StartTime)); err != nil {
				return err
			}
		}
	}
	return a.Store.FinishRecordWith(ctx, recordID, status, message, a.now(), stages)
}

// SetupEnvironment creates the record's workspace (and network) on this worker.
func (a *Activities) SetupEnvironment(ctx context.Context, rec executor.Record) (Environment, error) {
	env, err := a.Executor.Setup(ctx, rec)
	if err != nil {
		return Environment{}, fmt.Errorf("set up environment: %w", err)
	}
	return Environment{Env: env, TaskQueue: a.TaskQueue}, nil
}

// TeardownEnvironment removes the record's workspace, network and leftovers.
func (a *Activities) TeardownEnvironment(ctx context.Context, env executor.Environment) error {
	return a.Executor.Teardown(ctx, env.Record)
}

// RunStage runs one stage. It writes the stage's outcome into the record, or, when
// the stage succeeded and the workflow carries outcomes on (StageInput.CarryOutcome),
// returns it for a later write; meanwhile, while its step runs, it writes the
// earlier outcomes it was handed (StageInput.Deferred). It returns the outcomes
// still unwritten, oldest first: its own success, and, when writing the earlier ones
// failed, those too (running a successful step again would be worse than carrying
// them on).
func (a *Activities) RunStage(ctx context.Context, in StageInput) ([]model.StageUpdate, error) {
	info := activity.GetInfo(ctx)
	logger := a.recordLogger(in.Record).With("stage", in.Stage, "attempt", info.Attempt)
	if len(in.Deferred) == 0 {
		return a.runStageActivity(ctx, in, logger)
	}
	written := make(chan error, 1)
	go func() { written <- a.writeDeferred(ctx, in) }()
	own, err := a.runStageActivity(ctx, in, logger)
	werr := <-written
	switch {
	case werr == nil || err != nil:
		// On a failure the workflow still holds what it handed over.
		return own, err
	default:
		logger.Warn("outcomes of earlier stages not written; the workflow carries them on", "error", werr)
		return append(slices.Clone(in.Deferred), own...), nil
	}
}

// writeDeferred writes the earlier stages' outcomes the stage was handed.
func (a *Activities) writeDeferred(ctx context.Context, in StageInput) error {
	for _, u := range in.Deferred {
		if err := a.writeOutcome(ctx, in.Record.RecordID, "", u); err != nil {
			return fmt.Errorf("write the outcome of stage %s: %w", u.Stage, err)
		}
	}
	return nil
}

func (a *Activities) runStageActivity(ctx context.Context, in StageInput, logger *slog.Logger) ([]model.StageUpdate, error) {
	info := activity.GetInfo(ctx)
	start := a.now()
	// The Running mark is written while the step runs rather than before it: it
	// saves a store round trip per stage, and the final write waits for it. A step
	// over within runningMarkDelay is not marked at all (nobody could have seen the
	// mark): its final write carries the start time.
	runningMark := model.StageUpdate{Stage: in.Stage, Status: model.StatusRunning, StartTime: &start}
	running := make(chan error, 1)
	stepOver := make(chan struct{})
	go func() {
		t := time.NewTimer(runningMarkDelay)
		defer t.Stop()
		select {
		case <-stepOver:
			running <- errNotMarked
		case <-t.C:
			running <- a.Store.UpdateStage(ctx, in.Record.RecordID, runningMark)
		}
	}()
	// noStep ends the Running mark's wait when the step never starts.
	noStep := func(err error) ([]model.StageUpdate, error) {
		close(stepOver)
		if markErr := <-running; markErr != nil && markErr != errNotMarked {
			logger.Warn("mark stage running", "error", markErr)
		}
		return nil, err
	}
	secrets, err := a.loadSecrets(ctx, in.Record)
	if err != nil {
		return noStep(err)
	}
	log, err := a.openAttemptLog(ctx, in, "", info.Attempt, secrets.mask)
	if err != nil {
		return noStep(err)
	}
	fmt.Fprintf(log, "Stage: %s status: start\n", stageTitle(in.Stage))
	outcome, runErr := a.runStage(ctx, in, secrets, log)
	end := a.now()
	fmt.Fprintf(log, "Stage: %s status: finish\n", stageTitle(in.Stage))
	closeErr := log.Close()

	update := model.StageUpdate{Stage: in.Stage, EndTime: &end, Commit: outcome.commit}
	close(stepOver)
	marked := true
	if err := <-running; err != nil {
		// The step ran all the same: the final write below carries the start time.
		if err != errNotMarked {
			logger.Warn("mark stage running", "error", err)
		}
		update.StartTime = &start
		marked = false
	}
	// markRunning shows a stage that will be retried as Running meanwhile.
	markRunning := func() {
		if marked {
			return
		}
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := a.Store.UpdateStage(c, in.Record.RecordID, runningMark); err != nil {
			logger.Warn("mark stage running", "error", err)
		}
	}
	switch {
	case runErr == nil:
		update.Status = model.StatusSuccess
	case workerStopping(ctx):
		// The worker is shutting down and its stop timeout ran out, the record is
		// not aborted: the stage stays Running and is retried when the worker (or
		// its replacement with the same ID) is back.
		markRunning()
		a.Metrics.StageFinished(in.Stage, metrics.OutcomeError, end.Sub(start))
		logger.Warn("worker stopped during the stage; it will be retried")
		// Benign: a planned stop, which the SDK need not log as an activity error.
		return nil, temporal.NewApplicationErrorWithOptions("worker stopped during the stage", "WorkerStopped",
			temporal.ApplicationErrorOptions{Category: temporal.ApplicationErrorCategoryBenign})
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		update.Status = model.StatusFailed
		update.ErrorMessage = "the stage ran past the pipeline's timeout"
	case ctx.Err() != nil:
		update.Status = model.StatusAborted
	case temporal.IsApplicationError(runErr) && !isRetryable(runErr):
		update.Status = model.StatusFailed
		update.ErrorMessage = logs.MaskString(appMessage(runErr), secrets.mask)
	default:
		// An infrastructure error: the stage is retried and stays Running.
		markRunning()
		err := maskError(runErr, secrets.mask)
		a.Metrics.StageFinished(in.Stage, metrics.OutcomeError, end.Sub(start))
		logger.Warn("stage attempt failed; it will be retried", "error", err)
		return nil, err
	}
	a.Metrics.StageFinished(in.Stage, update.Status, end.Sub(start))
	logger.Info("stage finished", "status", update.Status, "duration", end.Sub(start))
	if closeErr != nil {
		// Rerunning the step would not bring the lost lines back.
		logger.Warn("stage log incomplete", "error", closeErr)
	}
	if runErr != nil {
		if err := a.writeOutcome(ctx, in.Record.RecordID, outcome.name, update); err != nil {
			return nil, err
		}
		return nil, maskError(runErr, secrets.mask)
	}
	// A success the workflow carries on is written later, unless others read it
	// from the record once the stages are over (the checked out commit, for a tag
	// or a commit status), it names the record, or this worker is stopping (the
	// next stage may wait long for another worker).
	if in.CarryOutcome && outcome.commit == nil && outcome.name == "" && !stopBegun(ctx) {
		return []model.StageUpdate{update}, nil
	}
	if err := a.writeOutcome(ctx, in.Record.RecordID, outcome.name, update); err != nil {
		return nil, err
	}
	return nil, nil
}

// runningMarkDelay is how long a stage runs before it is marked Running.
const runningMarkDelay = 50 * time.Millisecond

// errNotMarked says the stage was over before it was marked Running.
var errNotMarked = errors.New("stage not marked running")

// outcomeRetryWindow is how long a finished stage keeps trying to record its
// outcome through a store outage before giving up (and being retried whole).
var outcomeRetryWindow = 2 * time.Minute

// writeOutcome records a finished stage, even when the run was cancelled, retrying
// through a brief store outage rather than running the step again.
func (a *Activities) writeOutcome(ctx context.Context, recordID, name string, u model.StageUpdate) error {
	writeCtx := context.WithoutCancel(ctx)
	write := func() error {
		c, cancel := context.WithTimeout(writeCtx, 30*time.Second)
		defer cancel()
		if name != "" {
			if err := a.Store.SetRecordRunning(c, recordID, "", name); err != nil {
				return err
			}
		}
		return a.Store.UpdateStage(c, recordID, u)
	}
	deadline := time.Now().Add(outcomeRetryWindow)
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		err := write()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		activity.RecordHeartbeat(ctx)
		time.Sleep(delay)
	}
}

// stageOutcome is what a stage learned that the record keeps.
type stageOutcome struct {
	commit *model.Commit
	name   string // the record's default name, once known
}

func (a *Activities) runStage(ctx context.Context, in StageInput, secrets runSecrets, log io.Writer) (stageOutcome, error) {
	stages := in.Record.Build.Stages
	switch in.Stage {
	case model.StageCodeCheckout:
		out, err := a.codeCheckout(ctx, in, secrets, log)
		if err == nil && in.Record.CommitStatus {
			a.reportPending(ctx, in, secrets.project.SCM(), out.commit.ID)
		}
		return out, err
	case model.StageUnitTest:
		return stageOutcome{}, a.runCommands(ctx, in, stages.UnitTest.Command, secrets, log)
	case model.StagePackage:
		return stageOutcome{}, a.runCommands(ctx, in, stages.Package.Command, secrets, log)
	case model.StageCodeScan:
		if stages.CodeScan.SonarQube != nil {
			return stageOutcome{}, a.codeScan(ctx, in, log)
		}
		// The spec's create body also allows a plain command scan.
		if len(stages.CodeScan.Command) > 0 {
			return stageOutcome{}, a.runCommands(ctx, in, stages.CodeScan.Command, secrets, log)
		}
	case model.StageImageBuild:
		return stageOutcome{}, a.imageBuild(ctx, in, secrets, log)
	case model.StageIntegrationTest:
		return stageOutcome{}, a.integrationTest(ctx, in, secrets, log)
	case model.StageImageRelease:
		return stageOutcome{}, a.imageRelease(ctx, in, secrets, log)
	}
	msg := fmt.Sprintf("stage %s is not implemented yet", in.Stage)
	fmt.Fprintln(log, msg)
	return stageOutcome{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNotImplemented, nil)
}

// stopBegun says the worker running the activity has begun to stop.
func stopBegun(ctx context.Context) bool {
	select {
	case <-activity.GetWorkerStopChannel(ctx):
		return true
	default:
		return false
	}
}

// workerStopping says the stage was cut short by its worker's shutdown: the worker's
// stop timeout ran out before the step was over, and the activity was cancelled
// with sdkworker.ErrWorkerShutdown (by the SDK or by package worker's stop timeout).
// A stage that ends by itself while its worker drains keeps its own outcome.
func workerStopping(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), sdkworker.ErrWorkerShutdown)
}

// openAttemptLog opens the log of the stage (task "") or of one of its tasks, after
// the lines of the earlier attempts, and starts a retried attempt's lines (a worker
// died or an infrastructure error) with a banner that sets them apart from the
// earlier attempt's: "Stage: UnitTest attempt 2" or "Task: web attempt 2".
func (a *Activities) openAttemptLog(ctx context.Context, in StageInput, task string, attempt int32, secrets []string) (io.WriteCloser, error) {
	log, err := a.openLog(ctx, in, task, attempt, secrets)
	if err != nil {
		return nil, err
	}
	switch {
	case attempt <= 1:
	case task == "":
		fmt.Fprintf(log, "Stage: %s attempt %d\n", stageTitle(in.Stage), attempt)
	default:
		fmt.Fprintf(log, "%s%d\n", logs.TaskAttemptPrefix(task), attempt)
	}
	return log, nil
}

func stageTitle(stage string) string {
	if stage == "" {
		return stage
	}
	return string(stage[0]-'a'+'A') + stage[1:]
}

func isRetryable(err error) bool {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return !appErr.NonRetryable()
	}
	return true
}

func appMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	return err.Error()
}
