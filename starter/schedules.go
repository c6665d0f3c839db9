package starter

import (
	"context"
	"errors"
	"fmt"
	"strings"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/searchattr"
	"github.com/cycloneci/cyclone/workflows"
)

// ScheduleID names the Temporal Schedule of a pipeline's i-th cron.
func ScheduleID(pipelineID string, i int) string {
	return fmt.Sprintf("cyclone-cron-%s-%d", pipelineID, i)
}

// CronError is a cron Temporal refused (a bad expression).
type CronError struct {
	Index int
	Err   error
}

func (e *CronError) Error() string { return fmt.Sprintf("cron %d: %v", e.Index, e.Err) }
func (e *CronError) Unwrap() error { return e.Err }

// CronIndex says which cron of the pipeline was refused.
func (e *CronError) CronIndex() int { return e.Index }

func crons(p *model.Pipeline) []model.Cron {
	if p == nil || p.AutoTrigger == nil || p.AutoTrigger.CronTrigger == nil {
		return nil
	}
	return p.AutoTrigger.CronTrigger.Crons
}

// SVNHead is the ref of a cron record of a Subversion pipeline: the source's URL (and
// path) at its latest revision. Subversion has no default branch: the URL names what
// is built, so a branch name such as "trunk" would be appended to it.
const SVNHead = activities.SVNHead

// defaultRef is the ref a cron record builds: the main code source's, else HEAD for
// Subversion and master for git.
func defaultRef(p *model.Pipeline) string {
	if src := p.Build.Stages.CodeCheckout.Main(); src != nil {
		for _, g := range []*model.GitSource{src.GitHub, src.GitLab} {
			if g != nil && g.Ref != "" {
				return g.Ref
			}
		}
		if strings.EqualFold(src.Type, model.SCMSVN) {
			return SVNHead
		}
	}
	return "master"
}

// scheduleInput is what a cron's schedule starts: a record whose ID and start time
// the workflow takes from its own run (see workflows.PipelineRecord).
//
// Like a record started from the API, it runs on the project's cloud, in its
// namespace (cloud is the project's cloud object, nil when unknown) and with its
// worker quota, as they are when the schedule is written.
func scheduleInput(project *model.Project, p *model.Pipeline, c model.Cron, cloud *model.Cloud) activities.RecordInput {
	params := model.PerformParams{Ref: defaultRef(p), Stages: c.Stages}
	return InputOnCloud(&model.Record{Trigger: model.TriggerCron, PerformParams: &params}, project, p, cloud)
}

// scheduleAction starts the record of the pipeline's i-th cron. Each cron has its own
// workflow ID prefix (its schedule's ID), to which Temporal appends the scheduled
// time: two crons firing the same minute start two records, while one cron's
// action, retried or redelivered for the same time, starts one.
func (s *Starter) scheduleAction(project *model.Project, p *model.Pipeline, i int, c model.Cron, cloud *model.Cloud) *client.ScheduleWorkflowAction {
	a := &client.ScheduleWorkflowAction{
		ID:        ScheduleID(p.ID, i),
		Workflow:  workflows.RecordWorkflowName,
		Args:      []any{scheduleInput(project, p, c, cloud)},
		TaskQueue: s.TaskQueue,
		Memo:      recordMemo(project, p, ""),
	}
	if s.SearchAttributes {
		a.TypedSearchAttributes = temporal.NewSearchAttributes(
			searchattr.Project.ValueSet(project.Name),
			searchattr.Pipeline.ValueSet(p.Name),
			searchattr.Trigger.ValueSet(model.TriggerCron),
		)
	}
	return a
}

func scheduleSpec(c model.Cron) client.ScheduleSpec {
	return client.ScheduleSpec{CronExpressions: []string{c.Expression}, TimeZoneName: c.Timezone}
}

// DeactivatedNote marks the schedules paused because their pipeline is deactivated
// (and only those are resumed when it is activated again).
const DeactivatedNote = "pipeline deactivated"

// overlapPolicy maps a cron's overlap to Temporal's: by default a cron run is
// skipped while the previous one still runs.
func overlapPolicy(c model.Cron) enumspb.ScheduleOverlapPolicy {
	switch c.Overlap {
	case model.OverlapBufferOne:
		return enumspb.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE
	case model.OverlapAllowAll:
		return enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL
	}
	return enumspb.SCHEDULE_OVERLAP_POLICY_SKIP
}

// SyncSchedules makes the pipeline's Temporal Schedules match its crons: one
// schedule per cron, created or updated in place (a pause set from the CLI stays),
// and the schedules of crons beyond the list (previous is how many there were)
// deleted. A cron Temporal refuses is a *CronError.
func (s *Starter) SyncSchedules(ctx context.Context, project *model.Project, p *model.Pipeline, previous int) error {
	sc := s.Client.ScheduleClient()
	var cloud *model.Cloud
	if len(crons(p)) > 0 {
		var err error
		if cloud, err = s.projectCloudObject(ctx, project); err != nil {
			return err
		}
	}
	for i, c := range crons(p) {
		id := ScheduleID(p.ID, i)
		action := s.scheduleAction(project, p, i, c, cloud)
		spec := scheduleSpec(c)
		h := sc.GetHandle(ctx, id)
		_, err := h.Describe(ctx)
		var notFound *serviceerror.NotFound
		switch {
		case errors.As(err, &notFound):
			opts := client.ScheduleOptions{ID: id, Spec: spec, Action: action, Overlap: overlapPolicy(c)}
			if !p.IsActive() {
				opts.Paused, opts.Note = true, DeactivatedNote
			}
			_, err = sc.Create(ctx, opts)
		case err == nil:
			err = h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
				sched := in.Description.Schedule
				sched.Action, sched.Spec = action, &spec
				if sched.Policy == nil {
					sched.Policy = &client.SchedulePolicies{}
				}
				sched.Policy.Overlap = overlapPolicy(c)
				if sched.State == nil {
					sched.State = &client.ScheduleState{}
				}
				switch {
				case !p.IsActive():
					sched.State.Paused, sched.State.Note = true, DeactivatedNote
				case sched.State.Paused && sched.State.Note == DeactivatedNote:
					// Reactivated; a pause an operator made stays.
					sched.State.Paused, sched.State.Note = false, "pipeline reactivated"
				}
				return &client.ScheduleUpdate{Schedule: &sched}, nil
			}})
		}
		var invalid *serviceerror.InvalidArgument
		if errors.As(err, &invalid) {
			return &CronError{Index: i, Err: err}
		}
		if err != nil {
			return fmt.Errorf("sync schedule %s: %w", id, err)
		}
	}
	return s.deleteSchedules(ctx, p.ID, len(crons(p)), previous)
}

// DeleteSchedules deletes the schedules of a pipeline that had n crons.
func (s *Starter) DeleteSchedules(ctx context.Context, p *model.Pipeline) error {
	return s.deleteSchedules(ctx, p.ID, 0, len(crons(p)))
}

func (s *Starter) deleteSchedules(ctx context.Context, pipelineID string, from, to int) error {
	for i := from; i < to; i++ {
		err := s.Client.ScheduleClient().GetHandle(ctx, ScheduleID(pipelineID, i)).Delete(ctx)
		var notFound *serviceerror.NotFound
		if err != nil && !errors.As(err, &notFound) {
			return fmt.Errorf("delete schedule %s: %w", ScheduleID(pipelineID, i), err)
		}
	}
	return nil
}

// DescribeSchedules fills each cron's next run times and paused state from its
// schedule, so a pause set with the `temporal` CLI shows up.
func (s *Starter) DescribeSchedules(ctx context.Context, p *model.Pipeline) error {
	cs := crons(p)
	for i := range cs {
		desc, err := s.Client.ScheduleClient().GetHandle(ctx, ScheduleID(p.ID, i)).Describe(ctx)
		if err != nil {
			return fmt.Errorf("describe schedule %s: %w", ScheduleID(p.ID, i), err)
		}
		cs[i].NextRunTimes = desc.Info.NextActionTimes
		if st := desc.Schedule.State; st != nil {
			cs[i].Paused = st.Paused
		}
	}
	return nil
}
