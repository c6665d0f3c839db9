package store

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

var recordFilterFields = map[string]string{"status": "status", "trigger": "trigger", "name": "name"}

var newestFirst = bson.D{{Key: "startTime", Value: -1}, {Key: "_id", Value: -1}}

// CreateRecord inserts a record; the caller sets its ID (it is the workflow ID).
func (s *Store) CreateRecord(ctx context.Context, r *model.Record) error {
	if r.StartTime.IsZero() {
		r.StartTime = now()
	}
	r.StartBucket = StartBucket(r.StartTime)
	_, err := s.records.InsertOne(ctx, r)
	return writeErr(err)
}

// GetRecord returns a record of a pipeline.
func (s *Store) GetRecord(ctx context.Context, pipelineID, id string) (*model.Record, error) {
	return findOne[model.Record](ctx, s.records, bson.D{{Key: "_id", Value: id}, {Key: "pipelineID", Value: pipelineID}})
}

// GetRecordByID returns a record by its ID alone.
func (s *Store) GetRecordByID(ctx context.Context, id string) (*model.Record, error) {
	return findOne[model.Record](ctx, s.records, bson.D{{Key: "_id", Value: id}})
}

// ListRecords lists a pipeline's records, newest first.
func (s *Store) ListRecords(ctx context.Context, pipelineID string, o ListOptions) ([]*model.Record, int64, error) {
	filter, err := buildFilter(bson.D{{Key: "pipelineID", Value: pipelineID}}, o.Filter, recordFilterFields)
	if err != nil {
		return nil, 0, err
	}
	return list[model.Record](ctx, s.records, filter, newestFirst, o)
}

// ListUnfinishedRecords returns up to limit records not in a terminal state that
// started after `after` and before `before`, oldest first, for reconciliation with
// Temporal. Page by passing the last record's start time as `after`.
func (s *Store) ListUnfinishedRecords(ctx context.Context, after, before time.Time, limit int64) ([]*model.Record, error) {
	filter := bson.D{
		{Key: "status", Value: bson.D{{Key: "$in", Value: bson.A{model.StatusPending, model.StatusRunning}}}},
		{Key: "startTime", Value: bson.D{{Key: "$gt", Value: after}, {Key: "$lt", Value: before}}},
	}
	items, _, err := list[model.Record](ctx, s.records, filter, bson.D{{Key: "startTime", Value: 1}}, ListOptions{Limit: limit})
	return items, err
}

// DeleteRecord deletes one record.
func (s *Store) DeleteRecord(ctx context.Context, id string) error {
	if err := s.deleteLogs(ctx, "recordID", id); err != nil {
		return err
	}
	res, err := s.records.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return err
	}
	if res.DeletedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// SetRecordRunning marks a record Running and, when name is not empty, names it.
// It never moves a terminal record back.
func (s *Store) SetRecordRunning(ctx context.Context, id, runID, name string) error {
	set := bson.D{{Key: "status", Value: model.StatusRunning}}
	if runID != "" {
		set = append(set, bson.E{Key: "runID", Value: runID})
	}
	if name != "" {
		set = append(set, bson.E{Key: "name", Value: name})
	}
	return s.updateUnfinished(ctx, id, set)
}

// UpdateStage applies a stage status change to a record. Applying the same update
// twice gives the same document, so a retried activity is harmless.
func (s *Store) UpdateStage(ctx context.Context, id string, u model.StageUpdate) error {
	prefix := "stageStatus." + u.Stage + "."
	var set bson.D
	if u.Status != "" {
		set = append(set, bson.E{Key: prefix + "status", Value: u.Status})
	}
	if u.ErrorMessage != "" {
		set = append(set, bson.E{Key: prefix + "errorMessage", Value: u.ErrorMessage})
	}
	if u.StartTime != nil {
		set = append(set, bson.E{Key: prefix + "startTime", Value: u.StartTime.UTC().Truncate(time.Millisecond)})
	}
	if u.EndTime != nil {
		set = append(set, bson.E{Key: prefix + "endTime", Value: u.EndTime.UTC().Truncate(time.Millisecond)})
	}
	if u.Commit != nil {
		set = append(set, bson.E{Key: prefix + "commits.mainRepo", Value: u.Commit})
	}
	if u.Tasks != nil {
		tasks := make([]model.TaskStatus, len(u.Tasks))
		for i, t := range u.Tasks {
			t.StartTime, t.EndTime = millis(t.StartTime), millis(t.EndTime)
			tasks[i] = t
		}
		set = append(set, bson.E{Key: prefix + "tasks", Value: tasks})
	}
	if u.Images != nil {
		set = append(set, bson.E{Key: prefix + "images", Value: u.Images})
	}
	if u.SonarQube != nil {
		set = append(set, bson.E{Key: prefix + "sonarqube", Value: u.SonarQube})
	}
	if len(set) == 0 {
		return nil
	}
	_, err := s.records.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: set}})
	return err
}

// FinishRecord puts a record in a terminal state. Stages still Pending or Running end
// with the record's status when it is Aborted or Failed.
func (s *Store) FinishRecord(ctx context.Context, id, status, errorMessage string, end time.Time) error {
	r, err := s.GetRecordByID(ctx, id)
	if err != nil {
		return err
	}
	end = end.UTC().Truncate(time.Millisecond)
	set := bson.D{{Key: "status", Value: status}, {Key: "endTime", Value: end}}
	if errorMessage != "" {
		set = append(set, bson.E{Key: "errorMessage", Value: errorMessage})
	}
	if status != model.StatusSuccess {
		for _, st := range unfinishedStages(r.StageStatus) {
			set = append(set,
				bson.E{Key: "stageStatus." + st + ".status", Value: status},
				bson.E{Key: "stageStatus." + st + ".endTime", Value: end})
		}
	}
	return s.updateUnfinished(ctx, id, set)
}

// updateUnfinished applies set to a record that is not terminal yet.
func (s *Store) updateUnfinished(ctx context.Context, id string, set bson.D) error {
	filter := bson.D{
		{Key: "_id", Value: id},
		{Key: "status", Value: bson.D{{Key: "$in", Value: bson.A{model.StatusPending, model.StatusRunning}}}},
	}
	_, err := s.records.UpdateOne(ctx, filter, bson.D{{Key: "$set", Value: set}}, options.Update())
	return err
}

func unfinishedStages(ss *model.StageStatus) []string {
	var out []string
	for _, name := range model.StageOrder {
		if st := ss.Of(name); st != nil && !model.IsTerminal(st.Status) {
			out = append(out, name)
		}
	}
	return out
}

// millis is t in UTC to the millisecond, as the store keeps times.
func millis(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	m := t.UTC().Truncate(time.Millisecond)
	return &m
}
