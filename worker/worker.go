// Package worker wires a Temporal worker for Cyclone: the PipelineRecord workflow and
// the activities with their dependencies.
//
// A Cyclone worker polls two task queues: the shared one (workflows, environment
// setup, projection writes) and its own, named after the worker ID, where the stages
// of the records whose workspace it holds are sent. A worker restarted with the same
// ID picks up the stages of its records again.
package worker

import (
	"errors"
	"fmt"
	"os"
	"time"

	"go.temporal.io/sdk/client"
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
}

// Worker is a running Cyclone worker.
type Worker struct {
	shared sdkworker.Worker
	own    sdkworker.Worker // nil for a single worker
}

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
	base := sdkworker.Options{
		Identity: o.WorkerID,
		// Cancellation reaches a running stage through its heartbeat: keep them frequent.
		MaxHeartbeatThrottleInterval: time.Second,
	}
	sharedOpts := base
	if o.SingleWorker {
		sharedOpts.MaxConcurrentActivityExecutionSize = o.MaxConcurrentStages
		o.Activities.TaskQueue = o.TaskQueue
	}
	shared := sdkworker.New(o.Client, o.TaskQueue, sharedOpts)
	shared.RegisterWorkflowWithOptions(workflows.PipelineRecord, workflow.RegisterOptions{Name: workflows.RecordWorkflowName})
	shared.RegisterActivity(o.Activities)
	if o.SingleWorker {
		return &Worker{shared: shared}, nil
	}

	own := OwnTaskQueue(o.TaskQueue, o.WorkerID)
	o.Activities.TaskQueue = own
	ownOpts := base
	ownOpts.MaxConcurrentActivityExecutionSize = o.MaxConcurrentStages
	ownW := sdkworker.New(o.Client, own, ownOpts)
	ownW.RegisterActivity(o.Activities)
	return &Worker{shared: shared, own: ownW}, nil
}

// Start begins polling both task queues.
func (w *Worker) Start() error {
	if w.own != nil {
		if err := w.own.Start(); err != nil {
			return err
		}
	}
	if err := w.shared.Start(); err != nil {
		if w.own != nil {
			w.own.Stop()
		}
		return err
	}
	return nil
}

// Stop stops polling and waits for running activities to return.
func (w *Worker) Stop() {
	w.shared.Stop()
	if w.own != nil {
		w.own.Stop()
	}
}
