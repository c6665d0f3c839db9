package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/cycloneci/cyclone/internal/executor"
)

var _ executor.Lister = (*Executor)(nil)

// List returns the containers (running or not), networks and volumes on the engine
// that carry Cyclone's record labels, whichever worker made them.
func (e *Executor) List(ctx context.Context) ([]executor.Instance, error) {
	managed := filters.NewArgs(filters.Arg("label", executor.LabelManaged+"=true"))
	containers, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: managed})
	if err != nil {
		return nil, fmt.Errorf("docker executor: list containers: %w", err)
	}
	var out []executor.Instance
	for _, c := range containers {
		name := c.ID
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, executor.Instance{
			Kind: executor.KindContainer, Name: name, Record: recordOf(c.Labels), Stage: c.Labels[executor.LabelStage],
			State: string(c.State), Running: c.State == container.StateRunning, Created: time.Unix(c.Created, 0).UTC(),
		})
	}
	networks, err := e.cli.NetworkList(ctx, network.ListOptions{Filters: managed})
	if err != nil {
		return nil, fmt.Errorf("docker executor: list networks: %w", err)
	}
	for _, n := range networks {
		out = append(out, executor.Instance{Kind: executor.KindNetwork, Name: n.Name, Record: recordOf(n.Labels), Created: n.Created.UTC()})
	}
	volumes, err := e.cli.VolumeList(ctx, volume.ListOptions{Filters: managed})
	if err != nil {
		return nil, fmt.Errorf("docker executor: list volumes: %w", err)
	}
	for _, v := range volumes.Volumes {
		created, _ := time.Parse(time.RFC3339, v.CreatedAt)
		out = append(out, executor.Instance{Kind: executor.KindVolume, Name: v.Name, Record: recordOf(v.Labels), Created: created.UTC()})
	}
	return out, nil
}

func recordOf(labels map[string]string) executor.Record {
	return executor.Record{ID: labels[executor.LabelRecord], Project: labels[executor.LabelProject], Pipeline: labels[executor.LabelPipeline]}
}
