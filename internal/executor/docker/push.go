package docker

import (
	"context"
	"fmt"
	"io"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/cycloneci/cyclone/internal/executor"
)

var _ executor.ImagePusher = (*Executor)(nil)

// PushImage pushes ref, which must be on the engine already, with the given
// credentials. A registry that refuses the credentials or the push fails with a
// *executor.FailedError; an engine that cannot be reached gives a plain error.
func (e *Executor) PushImage(ctx context.Context, ref string, auth executor.RegistryAuth, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	if _, err := e.cli.ImageInspect(ctx, ref); err != nil {
		if cerrdefs.IsNotFound(err) {
			return executor.Failed("image %s is not on the Docker engine (imageBuild makes it in the same record)", ref)
		}
		return fmt.Errorf("docker executor: inspect image %s: %w", ref, err)
	}
	var encoded string
	if auth != (executor.RegistryAuth{}) {
		var err error
		encoded, err = registry.EncodeAuthConfig(registry.AuthConfig{
			Username: auth.Username, Password: auth.Password, ServerAddress: auth.Server,
		})
		if err != nil {
			return fmt.Errorf("docker executor: encode registry credentials: %w", err)
		}
	}
	fmt.Fprintf(out, "Pushing image %s\n", ref)
	rc, err := e.cli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: encoded})
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("docker executor: push %s cancelled: %w", ref, ctx.Err())
		case cerrdefs.IsInvalidArgument(err), cerrdefs.IsNotFound(err), cerrdefs.IsUnauthorized(err), cerrdefs.IsPermissionDenied(err):
			return executor.Failed("push of %s refused: %v", ref, err)
		}
		return fmt.Errorf("docker executor: push %s: %w", ref, err)
	}
	defer rc.Close()
	if err := copyMessages(rc, out); err != nil {
		if fe, ok := executor.IsFailed(err); ok {
			return executor.Failed("push of %s failed: %s", ref, fe.Message)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("docker executor: push %s cancelled: %w", ref, ctx.Err())
		}
		return fmt.Errorf("docker executor: push %s: %w", ref, err)
	}
	return nil
}
