// Package worker wires a Temporal worker for Cyclone: the PipelineRecord workflow and
// the activities with their dependencies.
//
// A Cyclone worker polls two task queues: the shared one (workflows, environment
// setup, projection writes) and its own, named after the worker ID, where the stages
// of the records whose workspace it holds are sent. A worker restarted with the same
// ID picks up the stages of its records again. A worker serving clouds also polls
// each cloud's queue, where the environments of those clouds' records are set up.
//
// Stopping a worker (SIGTERM) is graceful: it stops polling at once, lets running
// activities finish within Options.WorkerStopTimeout, then cancels the ones still
// running, which hand their work back (a stage returns a retryable error and is
// retried by the worker's replacement with the same ID), and waits a little longer
// for them to report that to Temporal, so no attempt waits for its heartbeat timeout.
package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/workflows"
)

// Options configure a Worker.
type Options struct {
	Client     client.Client
	TaskQueue  string // shared task queue, e.g. starter.DefaultTaskQueue
	WorkerID   string // stable identity; default: the host name
	Activities *activities.Activities
	// MaxConcurrentStages bounds the stages this worker runs at once (default 16).
	MaxConcurrentStages int
	// SingleWorker says this is the only worker (`cyclone dev`): stages then use the
	// shared task queue, where Temporal hands them to the worker eagerly, in the
	// response that schedules them.
	SingleWorker bool
	// Clouds are the clouds this worker runs records of, beside the default one:
	// it also polls their task queues (see activities.CloudTaskQueue).
	Clouds []string
	// WorkerStopTimeout is how long running activities may go on once Stop is
	// called (0: none). Those still running then are cancelled and hand their work
	// back; Stop returns at most HandBackGrace later.
	WorkerStopTimeout time.Duration
}

// HandBackGrace is how long a stopping worker waits, after its stop timeout, for the
// activities it cancelled to stop their steps, record their state and report the
// failure that has Temporal retry them elsewhere.
const HandBackGrace = 10 * time.Second

// Worker is a running Cyclone worker.
type Worker struct {
	shared sdkworker.Worker
	own    sdkworker.Worker   // nil for a single worker
	clouds []sdkworker.Worker // the slot queue's and the clouds' queues
}

// maxWaitingRecords bounds the records one worker keeps waiting for room on their
// cloud at once; more wait in Temporal's queue.
const maxWaitingRecords = 1000

// OwnTaskQueue is the task queue of the worker with the given ID.
func OwnTaskQueue(shared, workerID string) string { return shared + "-worker-" + workerID }

// New builds the worker; Start begins polling.
func New(o Options) (*Worker, error) {
	if o.Client == nil || o.Activities == nil || o.TaskQueue == "" {
		return nil, errors.New("worker: client, activities and task queue are required")
	}
	if o.WorkerID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("worker: no worker ID and no host name: %w", err)
		}
		o.WorkerID = host
	}
	if o.MaxConcurrentStages <= 0 {
		o.MaxConcurrentStages = 16
	}
	if o.WorkerStopTimeout < 0 {
		o.WorkerStopTimeout = 0
	}
	base := sdkworker.Options{
		Identity: o.WorkerID,
		// Cancellation reaches a running stage through its heartbeat: keep them frequent.
		MaxHeartbeatThrottleInterval: time.Second,
		// The SDK cancels what still runs when its stop timeout ends and returns
		// from Stop without waiting for those activities to report: the process
		// would exit first and their attempts would only end on their heartbeat
		// timeout. So the activities are cancelled by stopTimeout at the stop
		// timeout proper, and the SDK waits HandBackGrace more for their reports.
		WorkerStopTimeout: o.WorkerStopTimeout + HandBackGrace,
		Interceptors:      []interceptor.WorkerInterceptor{&stopTimeout{timeout: o.WorkerStopTimeout}},
	}
	sharedOpts := base
	if o.SingleWorker {
		sharedOpts.MaxConcurrentActivityExecutionSize = o.MaxConcurrentStages
		o.Activities.TaskQueue = o.TaskQueue
	}
	shared := sdkworker.New(o.Client, o.TaskQueue, sharedOpts)
	shared.RegisterWorkflowWithOptions(workflows.PipelineRecord, workflow.RegisterOptions{Name: workflows.RecordWorkflowName})
	shared.RegisterActivity(o.Activities)
	w := &Worker{shared: shared}
	// Records waiting for room on their cloud wait here: many at once, mostly asleep.
	slotOpts := base
	slotOpts.MaxConcurrentActivityExecutionSize = maxWaitingRecords
	slots := sdkworker.New(o.Client, activities.SlotTaskQueue(o.TaskQueue), slotOpts)
	slots.RegisterActivity(o.Activities)
	w.clouds = append(w.clouds, slots)
	for _, cloud := range o.Clouds {
		cw := sdkworker.New(o.Client, activities.CloudTaskQueue(o.TaskQueue, cloud), base)
		cw.RegisterActivity(o.Activities)
		w.clouds = append(w.clouds, cw)
	}
	if o.SingleWorker {
		return w, nil
	}

	own := OwnTaskQueue(o.TaskQueue, o.WorkerID)
	o.Activities.TaskQueue = own
	ownOpts := base
	ownOpts.MaxConcurrentActivityExecutionSize = o.MaxConcurrentStages
	w.own = sdkworker.New(o.Client, own, ownOpts)
	w.own.RegisterActivity(o.Activities)
	return w, nil
}

// all lists the SDK workers, the shared one last (it starts workflows, which
// schedule work on the others).
func (w *Worker) all() []sdkworker.Worker {
	var ws []sdkworker.Worker
	if w.own != nil {
		ws = append(ws, w.own)
	}
	return append(append(ws, w.clouds...), w.shared)
}

// Start begins polling the task queues.
func (w *Worker) Start() error {
	ws := w.all()
	for i, sw := range ws {
		if err := sw.Start(); err != nil {
			for _, started := range ws[:i] {
				started.Stop()
			}
			return err
		}
	}
	return nil
}

// Stop stops polling on every queue and waits for running activities to return:
// they have Options.WorkerStopTimeout to finish, then are cancelled and hand their
// work back (see the package comment). The SDK workers stop together, so the
// whole stop takes at most WorkerStopTimeout + HandBackGrace.
func (w *Worker) Stop() {
	var wg sync.WaitGroup
	for _, sw := range w.all() {
		wg.Go(sw.Stop)
	}
	wg.Wait()
}

// stopTimeout cancels an activity still running timeout after its worker began to
// stop, with the cause the SDK gives when it does so itself
// (sdkworker.ErrWorkerShutdown), by which RunStage knows to hand its stage back.
type stopTimeout struct {
	interceptor.WorkerInterceptorBase
	timeout time.Duration
}

func (s *stopTimeout) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &stopTimeoutActivity{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, timeout: s.timeout}
}

type stopTimeoutActivity struct {
	interceptor.ActivityInboundInterceptorBase
	timeout time.Duration
}

func (s *stopTimeoutActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopping := activity.GetWorkerStopChannel(ctx)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
			return
		case <-stopping:
		}
		t := time.NewTimer(s.timeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			cancel(sdkworker.ErrWorkerShutdown)
		}
	}()
	return s.Next.ExecuteActivity(ctx, in)
}
