package app_test

import (
	"context"
	"testing"

	"github.com/cycloneci/cyclone/internal/app"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// TestEnsureDefaultCloud: `cyclone dev` makes the default cloud once, of the
// executor it runs, and leaves one the user changed alone.
func TestEnsureDefaultCloud(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ctx := context.Background()
	t.Setenv("DOCKER_HOST", "")

	if err := app.EnsureDefaultCloud(ctx, env.Store, "docker"); err != nil {
		t.Fatal(err)
	}
	c, err := env.Store.GetCloud(ctx, model.DefaultCloudName)
	if err != nil || c.Type != model.CloudDocker || c.Docker == nil || c.Docker.Host != "unix:///var/run/docker.sock" {
		t.Fatalf("default cloud %+v %v", c, err)
	}
	c.MaxRunningRecords = 2
	if err := env.Store.UpdateCloud(ctx, c.Name, c); err != nil {
		t.Fatal(err)
	}
	if err := app.EnsureDefaultCloud(ctx, env.Store, "local"); err != nil {
		t.Fatal(err)
	}
	if c, err = env.Store.GetCloud(ctx, model.DefaultCloudName); err != nil || c.Type != model.CloudDocker || c.MaxRunningRecords != 2 {
		t.Fatalf("the user's default cloud changed: %+v %v", c, err)
	}

	if err := env.Store.DeleteCloud(ctx, model.DefaultCloudName); err != nil {
		t.Fatal(err)
	}
	if err := app.EnsureDefaultCloud(ctx, env.Store, "local"); err != nil {
		t.Fatal(err)
	}
	if c, err = env.Store.GetCloud(ctx, model.DefaultCloudName); err != nil || c.Type != model.CloudLocal || c.Docker != nil {
		t.Fatalf("default cloud without Docker %+v %v", c, err)
	}
}
