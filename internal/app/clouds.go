package app

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// EnsureDefaultCloud creates the cloud records run on when their project names
// none (model.DefaultCloudName), unless it exists: the local Docker engine when the
// executor is docker, else the worker's own host processes (Local). An existing
// default cloud is left as the user made it.
func EnsureDefaultCloud(ctx context.Context, st *store.Store, executorKind string) error {
	if _, err := st.GetCloud(ctx, model.DefaultCloudName); !errors.Is(err, store.ErrNotFound) {
		return err
	}
	c := &model.Cloud{Name: model.DefaultCloudName, Type: model.CloudLocal}
	if executorKind == "docker" {
		host := os.Getenv("DOCKER_HOST")
		if host == "" {
			host = "unix:///var/run/docker.sock"
		}
		c.Type, c.Docker = model.CloudDocker, &model.DockerCloud{Host: host}
	}
	if err := c.NormalizeAndValidate(); err != nil {
		return fmt.Errorf("default cloud: %w", err)
	}
	if err := st.CreateCloud(ctx, c); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("create the default cloud: %w", err)
	}
	return nil
}
