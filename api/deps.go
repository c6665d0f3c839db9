package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// Store is what the handlers need from persistence.
type Store interface {
	CreateProject(ctx context.Context, p *model.Project) error
	GetProject(ctx context.Context, name string) (*model.Project, error)
	ListProjects(ctx context.Context, o store.ListOptions) ([]*model.Project, int64, error)
	UpdateProject(ctx context.Context, name string, p *model.Project) error
	DeleteProject(ctx context.Context, id string) error
	ProjectCredentials(ctx context.Context, projectID string) (*store.Credentials, error)

	CreatePipeline(ctx context.Context, p *model.Pipeline) error
	GetPipeline(ctx context.Context, projectID, name string) (*model.Pipeline, error)
	ListPipelines(ctx context.Context, projectID string, o store.ListOptions) ([]*model.Pipeline, int64, error)
	UpdatePipeline(ctx context.Context, projectID, name string, p *model.Pipeline) error
	DeletePipeline(ctx context.Context, id string) error

	CreateRecord(ctx context.Context, r *model.Record) error
	GetRecord(ctx context.Context, pipelineID, id string) (*model.Record, error)
	ListRecords(ctx context.Context, pipelineID string, o store.ListOptions) ([]*model.Record, int64, error)
	ListPipelinesRecent(ctx context.Context, projectID string, o store.ListOptions, rc store.RecentCounts) ([]*model.ListedPipeline, int64, error)
	DeleteRecord(ctx context.Context, id string) error
	// FinishRecordWith writes the ending of a record whose workflow closed without
	// writing it, with the stage outcomes the workflow still held; a terminal
	// record is left as it is.
	FinishRecordWith(ctx context.Context, id, status, errorMessage string, end time.Time, stages []model.StageUpdate) error
	RecordStats(ctx context.Context, q store.StatsQuery) ([]store.DayStats, error)
}

// Runs starts and cancels pipeline records on the engine.
type Runs interface {
	// Start starts the record's workflow and returns its run ID.
	Start(ctx context.Context, rec *model.Record, project *model.Project, pipeline *model.Pipeline) (runID string, err error)
	// Cancel asks a running record to stop; cancelling a finished record is not an error.
	Cancel(ctx context.Context, recordID string) error
	// Started reports whether the record's workflow exists (after a Start whose
	// outcome is unknown).
	Started(ctx context.Context, recordID string) (bool, error)
	// DescribeWorkflowExecution describes a record's workflow (whose ID is the
	// record's), so that a record whose workflow has closed can be closed too.
	DescribeWorkflowExecution(ctx context.Context, workflowID, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error)
	// GetWorkflowHistory reads a closed record's workflow history, for the stage
	// outcomes it still held (reconcile.Temporal).
	GetWorkflowHistory(ctx context.Context, workflowID, runID string, isLongPoll bool, filterType enums.HistoryEventFilterType) client.HistoryEventIterator
}

// Schedules keeps a pipeline's crons as Temporal Schedules.
type Schedules interface {
	// SyncSchedules creates, updates and deletes (beyond the crons; previous is how
	// many crons the pipeline had) the pipeline's schedules. A refused cron is an
	// error with a CronIndex() int method naming it.
	SyncSchedules(ctx context.Context, project *model.Project, p *model.Pipeline, previous int) error
	DeleteSchedules(ctx context.Context, p *model.Pipeline) error
	// DescribeSchedules fills the crons' next run times and paused state.
	DescribeSchedules(ctx context.Context, p *model.Pipeline) error
}

// Paging defaults.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// listOptions reads start, limit and filter from the query.
func listOptions(c echo.Context) (store.ListOptions, error) {
	o := store.ListOptions{Limit: DefaultLimit}
	var err error
	if o.Start, err = intParam(c, "start", 0, 0, 1<<62); err != nil {
		return o, err
	}
	if o.Limit, err = intParam(c, "limit", DefaultLimit, 1, MaxLimit); err != nil {
		return o, err
	}
	if f := c.QueryParam("filter"); f != "" {
		o.Filter = map[string]string{}
		for _, kv := range strings.Split(f, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return o, invalidField("filter", "%q is not key=value", kv)
			}
			o.Filter[k] = v
		}
	}
	return o, nil
}

func intParam(c echo.Context, name string, def, min, max int64) (int64, error) {
	s := c.QueryParam(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < min || n > max {
		return 0, invalidField(name, "%q must be an integer between %d and %d", s, min, max)
	}
	return n, nil
}

// listResponse is the spec's list shape; items is never null.
type listResponse[T any] struct {
	Metadata struct {
		Total int64 `json:"total"`
	} `json:"metadata"`
	Items []T `json:"items"`
}

func renderList[T any](c echo.Context, items []T, total int64) error {
	resp := listResponse[T]{Items: items}
	if resp.Items == nil {
		resp.Items = []T{}
	}
	resp.Metadata.Total = total
	return c.JSON(http.StatusOK, resp)
}
