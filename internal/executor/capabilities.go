package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Optional capabilities. An Executor may also build images, push them and run
// long-lived service containers next to a record's steps. The activities find out
// with a type assertion (ex.(executor.ImageBuilder)) and fail the stage that needs a
// capability the configured executor lacks. The Docker executor has all three; the
// local executor has none.
//
// Errors follow the rule of Run: an error is an infrastructure failure worth a retry
// (engine down), unless it is a *FailedError, which says the pipeline itself is at
// fault (a Dockerfile that does not build, credentials the registry refuses, a
// service image that does not exist) and a retry would fail the same way.

// LabelService is the label key naming the service a service container runs.
const LabelService = "io.cyclone.service"

// BuildSpec describes one image to build from a record's workspace.
type BuildSpec struct {
	// ContextDir is the build context, relative to the workspace ("" is the workspace).
	ContextDir string
	// DockerfilePath is the Dockerfile, relative to the workspace; empty means
	// Dockerfile in ContextDir. Ignored when Dockerfile is set.
	DockerfilePath string
	// Dockerfile is an inline Dockerfile, used instead of a file of the workspace.
	Dockerfile string
	// Tag is the full reference the image gets, e.g. registry.example.com/team/web:v1.
	Tag string
	// Labels are put on the image.
	Labels map[string]string
}

// ImageBuilder builds images from the workspace of a record's environment. Neither
// ContextDir nor DockerfilePath may leave the workspace. The build's output is
// written to out as it comes. Building the same spec twice is safe (the tag moves to
// the newer image).
type ImageBuilder interface {
	BuildImage(ctx context.Context, env Environment, spec BuildSpec, out io.Writer) error
}

// RegistryAuth are the credentials of the registry an image is pushed to; the zero
// value pushes anonymously.
type RegistryAuth struct {
	// Server is the registry's host[:port], as in the image reference.
	Server   string
	Username string
	Password string
}

// ImagePusher pushes an image, already built on the executor, to its registry (the
// one its reference names). Progress is written to out. Pushing twice is safe.
type ImagePusher interface {
	PushImage(ctx context.Context, ref string, auth RegistryAuth, out io.Writer) error
}

// ServiceSpec is a long-running container started for an integration test.
type ServiceSpec struct {
	// Name is the service's DNS name on the record's network; unique in the record.
	Name  string
	Image string
	// Command, when set, replaces the image's command (its entrypoint stays).
	Command []string
	// Env holds KEY=VALUE pairs.
	Env []string
}

// ServiceRunner runs services on a record's network, where the record's steps reach
// them by name. StartService returns once the service's process runs; starting a
// service of the same name again replaces it. StopServices removes every service of
// the record and is safe to call twice or with none running; Teardown removes them
// too.
type ServiceRunner interface {
	StartService(ctx context.Context, env Environment, spec ServiceSpec) error
	StopServices(ctx context.Context, env Environment) error
}

// FailedError is a capability's error that the pipeline, not the infrastructure,
// is responsible for. Its message is meant for the record's user.
type FailedError struct {
	Message string
	Err     error // the cause, if any
}

func (e *FailedError) Error() string { return e.Message }

func (e *FailedError) Unwrap() error { return e.Err }

// Failed returns a *FailedError with a formatted message; a %w verb keeps the cause.
func Failed(format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return &FailedError{Message: err.Error(), Err: errors.Unwrap(err)}
}

// IsFailed reports whether err is (or wraps) a *FailedError, and returns it.
func IsFailed(err error) (*FailedError, bool) {
	var fe *FailedError
	if errors.As(err, &fe) {
		return fe, true
	}
	return nil, false
}
