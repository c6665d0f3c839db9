// Package worker wires a Temporal worker for Cyclone: the PipelineRecord workflow and
// the activities with their dependencies.
//
// A Cyclone worker polls two task queues: the shared one (workflows, environment
// setup, projection writes) and its own, named after the worker ID, where the stages
// of the records whose workspace it holds are sent. A worker restarted with the same
// ID picks up the stages of its records again. A worker serving clouds also polls
// each cloud's queue, where the environments of those clouds' records are set up.
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
	// Clouds are the clouds this worker runs records of, beside the default one:
	// it also polls their task queues (see activities.CloudTaskQueue).
	Clouds []string
}

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

// Stop stops polling and waits for running activities to return.
func (w *Worker) Stop() {
	ws := w.all()
	for i := len(ws) - 1; i >= 0; i-- {
		ws[i].Stop()
	}
}
