// Package starter is the Temporal client side of Cyclone: it starts a record's
// workflow (workflow ID = record ID) and cancels it. The API and the webhook handlers
// use it; they never talk to Temporal directly.
package starter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/searchattr"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/workflows"
)

// DefaultTaskQueue is the task queue record workflows run on.
const DefaultTaskQueue = "cyclone"

// Starter starts and cancels record workflows.
type Starter struct {
	Client    client.Client
	TaskQueue string
	// SearchAttributes turns the Cyclone search attributes on; they must be registered
	// in the namespace first.
	SearchAttributes bool
	// Clouds finds the project's cloud when a record starts, for the namespace of a
	// Kubernetes cloud (InputOnCloud). Nil: only a namespace the project names is
	// passed on, else the worker's executor uses its own default.
	Clouds Clouds
}

// Clouds finds a cloud by name (the store); a missing cloud is store.ErrNotFound.
type Clouds interface {
	GetCloud(ctx context.Context, name string) (*model.Cloud, error)
}

// New returns a Starter on the default task queue.
func New(c client.Client) *Starter {
	return &Starter{Client: c, TaskQueue: DefaultTaskQueue, SearchAttributes: true}
}

// Input builds the workflow input for a record of a pipeline, without knowing the
// project's cloud: InputOnCloud with no cloud.
func Input(rec *model.Record, project *model.Project, p *model.Pipeline) activities.RecordInput {
	return InputOnCloud(rec, project, p, nil)
}

// InputOnCloud builds the workflow input for a record of a pipeline whose project's
// records run on cloud c (nil when unknown or not stored). The record's namespace is
// the project's worker.location.namespace, else its worker.namespace, else the
// namespace of c when c is that project's Kubernetes cloud, else "" (the executor's
// default). Like the quota, it is fixed when the record starts.
func InputOnCloud(rec *model.Record, project *model.Project, p *model.Pipeline, c *model.Cloud) activities.RecordInput {
	return activities.RecordInput{
		RecordID:     rec.ID,
		ProjectID:    project.ID,
		PipelineID:   p.ID,
		Project:      project.Name,
		Pipeline:     p.Name,
		Trigger:      rec.Trigger,
		Params:       *rec.PerformParams,
		Stages:       orderedStages(rec.PerformParams.Stages, p.Build.Stages),
		Build:        p.Build,
		StageTimeout: p.StageTimeout(),
		StartTime:    rec.StartTime,
		CommitStatus: rec.Trigger == model.TriggerSCM && project.SCM != nil &&
			(project.SCM.Type == model.SCMGithub || project.SCM.Type == model.SCMGitlab),
		Quota:      workerQuota(project),
		Cloud:      projectCloud(project),
		Namespace:  recordNamespace(project, c),
		Generation: activities.RecordGeneration,
	}
}

// recordNamespace is the Kubernetes namespace of the project's records on cloud c
// (see InputOnCloud).
func recordNamespace(project *model.Project, c *model.Cloud) string {
	if w := project.Worker; w != nil {
		if w.Location != nil && w.Location.Namespace != "" {
			return w.Location.Namespace
		}
		if w.Namespace != "" {
			return w.Namespace
		}
	}
	if c == nil || c.Type != model.CloudKubernetes || c.Kubernetes == nil || c.Name != cloudName(project) {
		return ""
	}
	return c.Kubernetes.Namespace
}

// cloudName is the name of the cloud the project's records run on.
func cloudName(p *model.Project) string {
	if name := projectCloud(p); name != "" {
		return name
	}
	return model.DefaultCloudName
}

// projectCloudObject is the project's cloud, nil when s has no Clouds or the cloud
// is not stored (a worker serving it may still run the record, in its default
// namespace).
func (s *Starter) projectCloudObject(ctx context.Context, project *model.Project) (*model.Cloud, error) {
	if s.Clouds == nil {
		return nil, nil
	}
	c, err := s.Clouds.GetCloud(ctx, cloudName(project))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find the project's cloud: %w", err)
	}
	return c, nil
}

// projectCloud names the cloud the project's records run on ("" for the default).
func projectCloud(p *model.Project) string {
	if p.Worker == nil || p.Worker.Location == nil {
		return ""
	}
	return p.Worker.Location.CloudName
}

// workerQuota is a copy of the project's worker quota (nil when it has none): the
// record keeps the quota it started with.
func workerQuota(p *model.Project) map[string]string {
	if p.Worker == nil || len(p.Worker.Quota) == 0 {
		return nil
	}
	return maps.Clone(p.Worker.Quota)
}

// orderedStages keeps the selected stages that are configured, in Cyclone order.
func orderedStages(selected []string, configured *model.Stages) []string {
	want := map[string]bool{}
	for _, s := range selected {
		want[s] = true
	}
	var out []string
	for _, s := range configured.Configured() {
		if len(selected) == 0 || want[s] {
			out = append(out, s)
		}
	}
	return out
}

// StartTimeout bounds a start: the SDK retries an unreachable server for as long as
// the context lets it, and a caller waiting on an HTTP answer should get a 503 instead.
const StartTimeout = 10 * time.Second

// Start starts the record's workflow and returns its run ID.
func (s *Starter) Start(ctx context.Context, rec *model.Record, project *model.Project, p *model.Pipeline) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	opts := client.StartWorkflowOptions{
		ID:               rec.ID,
		TaskQueue:        s.TaskQueue,
		EnableEagerStart: true,
		Memo:             recordMemo(project, p, rec.ID),
	}
	if s.SearchAttributes {
		opts.TypedSearchAttributes = temporal.NewSearchAttributes(
			searchattr.Project.ValueSet(project.Name),
			searchattr.Pipeline.ValueSet(p.Name),
			searchattr.Record.ValueSet(rec.ID),
			searchattr.Trigger.ValueSet(rec.Trigger),
		)
	}
	c, err := s.projectCloudObject(ctx, project)
	if err != nil {
		return "", err
	}
	run, err := s.Client.ExecuteWorkflow(ctx, opts, workflows.RecordWorkflowName, InputOnCloud(rec, project, p, c))
	if err != nil {
		return "", fmt.Errorf("start workflow: %w", err)
	}
	return run.GetRunID(), nil
}

// Cancel requests cancellation of a record's workflow. A workflow that already
// finished or does not exist is not an error.
func (s *Starter) Cancel(ctx context.Context, recordID string) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	err := s.Client.CancelWorkflow(ctx, recordID, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return nil
	}
	return err
}

// DescribeWorkflowExecution describes a record's workflow.
func (s *Starter) DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	return s.Client.DescribeWorkflowExecution(ctx, workflowID, runID)
}

// GetWorkflowHistory reads a record's workflow history (see reconcile.Temporal).
func (s *Starter) GetWorkflowHistory(ctx context.Context, workflowID, runID string, isLongPoll bool, filterType enumspb.HistoryEventFilterType) client.HistoryEventIterator {
	return s.Client.GetWorkflowHistory(ctx, workflowID, runID, isLongPoll, filterType)
}

// Started reports whether the record's workflow exists.
func (s *Starter) Started(ctx context.Context, recordID string) (bool, error) {
	_, err := s.DescribeWorkflowExecution(ctx, recordID, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return false, nil
	}
	return err == nil, err
}
