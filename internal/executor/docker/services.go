package docker

import (
	"context"
	"errors"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/strslice"

	"github.com/cycloneci/cyclone/internal/executor"
)

var _ executor.ServiceRunner = (*Executor)(nil)

// ServiceContainerName is the name of the container of a record's service.
func ServiceContainerName(recordID, service string) string {
	return ContainerName(recordID, "service-"+service)
}

// StartService runs the service in a container on the record's network, where its
// name is a DNS alias. A service image the engine lacks is pulled; when that fails,
// or the service's process exits at once, the error is a *executor.FailedError.
func (e *Executor) StartService(ctx context.Context, env executor.Environment, spec executor.ServiceSpec) error {
	if spec.Name == "" || spec.Image == "" {
		return errors.New("docker executor: a service needs a name and an image")
	}
	if _, err := e.recordDir(env.Record.ID); err != nil {
		return err
	}
	if env.Network == "" {
		return errors.New("docker executor: the environment has no network")
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("docker executor: service %q: "+format, append([]any{spec.Name}, a...)...)
	}
	if _, err := e.cli.ImageInspect(ctx, spec.Image); err != nil {
		if !cerrdefs.IsNotFound(err) {
			return fail("inspect image %s: %w", spec.Image, err)
		}
		if err := e.pull(ctx, spec.Image, io.Discard); err != nil {
			if ctx.Err() != nil {
				return fail("cancelled: %w", ctx.Err())
			}
			return executor.Failed("service %s: image %s is not on the Docker engine and could not be pulled: %v", spec.Name, spec.Image, err)
		}
	}

	name := ServiceContainerName(env.Record.ID, spec.Name)
	if err := e.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
		return fail("remove leftover container %s: %w", name, err)
	}
	labels := env.Record.Labels()
	labels[executor.LabelStage] = "integrationTest"
	labels[executor.LabelService] = spec.Name
	cfg := &container.Config{Image: spec.Image, Env: spec.Env, Labels: labels}
	if len(spec.Command) > 0 {
		cfg.Cmd = strslice.StrSlice(spec.Command)
	}
	created, err := e.cli.ContainerCreate(ctx, cfg,
		&container.HostConfig{NetworkMode: container.NetworkMode(env.Network)},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			env.Network: {Aliases: []string{spec.Name}},
		}},
		nil, name)
	if err != nil {
		if cerrdefs.IsInvalidArgument(err) {
			return executor.Failed("service %s cannot be created: %v", spec.Name, err)
		}
		return fail("create container: %w", err)
	}
	if err := e.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		if _, ok := startExitCode(err); ok {
			return executor.Failed("service %s cannot start its command: %v", spec.Name, err)
		}
		return fail("start container: %w", err)
	}
	st, err := e.cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		return fail("inspect container: %w", err)
	}
	if st.State == nil || !st.State.Running {
		code := -1
		if st.State != nil {
			code = st.State.ExitCode
		}
		return executor.Failed("service %s exited (code %d) as soon as it started", spec.Name, code)
	}
	return nil
}

// StopServices removes every service container of the record.
func (e *Executor) StopServices(ctx context.Context, env executor.Environment) error {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", executor.LabelRecord+"="+env.Record.ID),
		filters.Arg("label", executor.LabelService),
	)})
	if err != nil {
		return fmt.Errorf("docker executor: list services: %w", err)
	}
	var errs []error
	for _, c := range list {
		if err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docker executor: remove services: %w", err)
	}
	return nil
}
