// Package executor defines where and how the steps of a pipeline record run.
//
// An Executor owns one "environment" per pipeline record: a workspace shared by every
// stage of that record (the checked-out code, build outputs) and, where the backend
// has one, a private network (for integration-test services). Implementations live in
// sub-packages: docker (containers on a Docker engine), kubernetes (pods on a cluster,
// the workspace on a volume claim: Setup's Environment has no Workspace directory)
// and local (host processes, for development and tests).
//
// # Lifecycle
//
// For every pipeline record the worker calls, in this order:
//
//  1. Setup(ctx, rec) before the first stage. Setup is idempotent: calling it again for
//     the same record (a retried activity, a new worker after a crash) returns the same
//     Environment and keeps what is already in the workspace.
//  2. Run(ctx, env, step, out) once per step. Steps of one record run one after the
//     other, except the tasks of one stage, which may run concurrently. Run blocks until
//     the step's process exits and returns its exit code; a non-zero exit code is a
//     Result, not an error. Errors are infrastructure failures (image missing, engine
//     down) and are worth retrying. Cancelling ctx kills the step; Run then returns an
//     error wrapping ctx.Err(). A leftover of the same step from a crashed attempt is
//     removed before the step starts again.
//  3. Teardown(ctx, rec) once at the end, whatever happened. Teardown is safe to call
//     twice, after a failed Setup, and without any Setup at all.
//
// Every step's output (stdout and stderr, interleaved as the process writes them) is
// copied to out as it is produced; out is never written to concurrently by one Run.
// Steps, containers, networks and volumes carry the record's labels (see Labels) so
// that they can be listed and reclaimed.
package executor

import (
	"context"
	"io"
)

// WorkspaceMount is where the workspace appears inside a step's container.
const WorkspaceMount = "/workspace"

// Label keys put on everything an executor creates for a record.
const (
	LabelManaged  = "io.cyclone.managed"
	LabelProject  = "io.cyclone.project"
	LabelPipeline = "io.cyclone.pipeline"
	LabelRecord   = "io.cyclone.record"
	LabelStage    = "io.cyclone.stage"
)

// Record identifies the pipeline record an environment belongs to.
type Record struct {
	ID       string `json:"id"`
	Project  string `json:"project"`
	Pipeline string `json:"pipeline"`
	// Namespace is the Kubernetes namespace of the record's pods and workspace claim
	// (the project's worker.location.namespace, else its cloud's); "" is the
	// executor's default. It travels in the Environment, so that every step and the
	// teardown go where Setup went. Executors without namespaces ignore it; it is
	// no label (Labels).
	Namespace string `json:"namespace,omitempty"`
}

// Labels returns the labels every resource of the record carries.
func (r Record) Labels() map[string]string {
	return map[string]string{
		LabelManaged:  "true",
		LabelProject:  r.Project,
		LabelPipeline: r.Pipeline,
		LabelRecord:   r.ID,
	}
}

// Environment is what Setup made for a record. It is small and JSON-serialisable so
// that it can travel between activities.
type Environment struct {
	Record Record `json:"record"`
	// Workspace is the workspace directory on the worker's file system; the worker
	// writes the checked-out code here. Steps see it at WorkspaceMount (Docker) or as
	// their working directory (local).
	Workspace string `json:"workspace"`
	// Network is the backend's private network for the record, if it has one.
	Network string `json:"network,omitempty"`
}

// Step is one process to run in a record's environment.
type Step struct {
	// Name is unique within the record, e.g. "unitTest" or "imageBuild-web".
	Name string
	// Stage is the pipeline stage the step belongs to (a label).
	Stage string
	// Image is the container image; the local executor ignores it.
	Image string
	// Command is the argv of the process, e.g. ["/bin/sh", "-ec", "make test"].
	Command []string
	// Env holds KEY=VALUE pairs added to the step's environment.
	Env []string
	// WorkDir is relative to the workspace; empty means the workspace itself.
	WorkDir string
	// Resources sizes the step, with the keys of a project's worker quota
	// ("requests.cpu", "limits.memory", ...) and Kubernetes quantities as values
	// ("500m", "2Gi"). Optional: keys left out take the executor's defaults. Only the
	// kubernetes executor uses it; the others ignore it.
	Resources map[string]string
}

// Result is how a step ended.
type Result struct {
	ExitCode int `json:"exitCode"`
}

// Executor runs the steps of pipeline records. See the package documentation for the
// lifecycle and the guarantees each method gives.
type Executor interface {
	Setup(ctx context.Context, rec Record) (Environment, error)
	Run(ctx context.Context, env Environment, step Step, out io.Writer) (Result, error)
	Teardown(ctx context.Context, rec Record) error
}
