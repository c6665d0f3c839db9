package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

var recordFilterFields = map[string]string{"status": "status", "trigger": "trigger", "name": "name"}

var newestFirst = bson.D{{Key: "startTime", Value: -1}, {Key: "_id", Value: -1}}

// CreateRecord inserts a record; the caller sets its ID (it is the workflow ID). A
// record with that ID already there is ErrConflict (a retried create: its derived
// data is brought up to date all the same).
func (s *Store) CreateRecord(ctx context.Context, r *model.Record) error {
	if r.StartTime.IsZero() {
		r.StartTime = now()
	}
	r.StartBucket = StartBucket(r.StartTime)
	r.CountedLevel = countedNothing
	var err error
	werr := s.thenDerived(ctx, r.ID, levelOf(r.Status), func() error {
		_, err = s.records.InsertOne(ctx, r)
		if err = writeErr(err); err != nil && !errors.Is(err, ErrConflict) {
			return err
		}
		return nil
	})
	if werr != nil {
		return werr
	}
	return err
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
// started before `before`, in the order (start time, ID), from the one after the
// record (after, afterID) on, for reconciliation with Temporal. Page by passing the
// last record's start time and ID; the zero time and "" start from the oldest.
func (s *Store) ListUnfinishedRecords(ctx context.Context, after time.Time, afterID string, before time.Time, limit int64) ([]*model.Record, error) {
	filter := bson.D{
		{Key: "status", Value: bson.D{{Key: "$in", Value: unfinishedStatuses}}},
		{Key: "startTime", Value: bson.D{{Key: "$lt", Value: before}}},
		{Key: "$or", Value: bson.A{
			bson.D{{Key: "startTime", Value: bson.D{{Key: "$gt", Value: after}}}},
			bson.D{{Key: "startTime", Value: after}, {Key: "_id", Value: bson.D{{Key: "$gt", Value: afterID}}}},
		}},
	}
	oldestFirst := bson.D{{Key: "startTime", Value: 1}, {Key: "_id", Value: 1}}
	items, _, err := list[model.Record](ctx, s.records, filter, oldestFirst, ListOptions{Limit: limit})
	return items, err
}

// DeleteRecord deletes one record on request, with its logs and its part of the
// derived data: it leaves the stats too, unlike a record rotated out (see
// RotateRecords), which stays counted.
func (s *Store) DeleteRecord(ctx context.Context, id string) error {
	if err := s.deleteLogs(ctx, "recordID", id); err != nil {
		return err
	}
	gone, err := s.takeRecord(ctx, id)
	if err != nil {
		return err
	}
	// An update of its derived data in flight lands before it is taken out.
	s.awaitDerived(ctx)
	// A record deleted while it ran may still get log lines from its stage: they
	// are watched for (DeleteOrphanLogs). A rotated record is finished, so is not.
	s.rotation.noteDeleted(id, now())
	return errors.Join(
		s.countRecord(ctx, gone, gone.CountedLevel, countedNothing),
		s.forgetRecent(ctx, gone))
}

// takeRecord deletes record id and returns it as it was.
func (s *Store) takeRecord(ctx context.Context, id string) (*model.Record, error) {
	var gone model.Record
	err := s.records.FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&gone)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &gone, nil
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
	set := stageSet(u)
	if len(set) == 0 {
		return nil
	}
	defer s.lockDoc(ctx, &recordLocks, id)()
	_, err := s.records.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, bson.D{{Key: "$set", Value: set}})
	return err
}

// stageSet is the $set of a stage update.
func stageSet(u model.StageUpdate) bson.D {
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
	return set
}

// FinishRecord puts a record in a terminal state. Stages still Pending or Running end
// with the record's status when it is Aborted or Failed. A record already terminal
// keeps its ending.
func (s *Store) FinishRecord(ctx context.Context, id, status, errorMessage string, end time.Time) error {
	return s.FinishRecordWith(ctx, id, status, errorMessage, end, nil)
}

// FinishRecordWith is FinishRecord that also applies stage updates not written yet
// (a stage's outcome the workflow carried on, see activities.StageInput.Deferred), in
// the same write: those stages end as the updates say, not with the record.
func (s *Store) FinishRecordWith(ctx context.Context, id, status, errorMessage string, end time.Time, stages []model.StageUpdate) error {
	// The record is terminal then, with this status or the one it already had.
	return s.thenDerived(ctx, id, countedFinal, func() error {
		return s.finishRecord(ctx, id, status, errorMessage, end, stages)
	})
}

func (s *Store) finishRecord(ctx context.Context, id, status, errorMessage string, end time.Time, stages []model.StageUpdate) error {
	defer s.lockDoc(ctx, &recordLocks, id)()
	r, err := s.GetRecordByID(ctx, id)
	if err != nil {
		return err
	}
	if model.IsTerminal(r.Status) {
		return nil
	}
	end = end.UTC().Truncate(time.Millisecond)
	set := bson.D{{Key: "status", Value: status}, {Key: "endTime", Value: end}}
	if errorMessage != "" {
		set = append(set, bson.E{Key: "errorMessage", Value: errorMessage})
	}
	updated := map[string]bool{}
	for _, u := range stages {
		set = append(set, stageSet(u)...)
		updated[u.Stage] = true
	}
	if status != model.StatusSuccess {
		for _, st := range unfinishedStages(r.StageStatus) {
			if updated[st] {
				continue
			}
			set = append(set,
				bson.E{Key: "stageStatus." + st + ".status", Value: status},
				bson.E{Key: "stageStatus." + st + ".endTime", Value: end})
		}
	}
	return s.updateRecordWhileLocked(ctx, id, unfinishedStatuses, bson.D{{Key: "$set", Value: set}})
}

// unfinishedStatuses are the statuses a record leaves for good, terminalStatuses
// those it keeps.
var (
	unfinishedStatuses = bson.A{model.StatusPending, model.StatusRunning}
	terminalStatuses   = bson.A{model.StatusSuccess, model.StatusFailed, model.StatusAborted}
)

// updateUnfinished applies set to a record that is not terminal yet.
func (s *Store) updateUnfinished(ctx context.Context, id string, set bson.D) error {
	return s.updateRecordWhile(ctx, id, unfinishedStatuses, bson.D{{Key: "$set", Value: set}})
}

// updateRecordWhile applies update to record id if its status is one of statuses,
// under the record's lock (see stripedLocks). MongoDB checks the status in the
// update's filter; FerretDB, which would read every record for that filter, reads
// the record's status by _id first.
func (s *Store) updateRecordWhile(ctx context.Context, id string, statuses bson.A, update bson.D) error {
	defer s.lockDoc(ctx, &recordLocks, id)()
	if s.scansQueries(ctx) {
		var cur struct {
			Status string `bson:"status"`
		}
		err := s.records.FindOne(ctx, bson.D{{Key: "_id", Value: id}},
			options.FindOne().SetProjection(bson.D{{Key: "status", Value: 1}})).Decode(&cur)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return nil
		}
		if err != nil || !slices.Contains(statuses, any(cur.Status)) {
			return err
		}
	}
	return s.updateRecordWhileLocked(ctx, id, statuses, update)
}

// updateRecordWhileLocked is updateRecordWhile for a caller that holds the record's
// lock and, on FerretDB, has read its status as one of statuses under it (every
// status write of this process takes the lock, so it is still that).
func (s *Store) updateRecordWhileLocked(ctx context.Context, id string, statuses bson.A, update bson.D) error {
	filter := bson.D{{Key: "_id", Value: id}}
	if !s.scansQueries(ctx) {
		filter = append(filter, bson.E{Key: "status", Value: bson.D{{Key: "$in", Value: statuses}}})
	}
	_, err := s.records.UpdateOne(ctx, filter, update)
	return err
}

// The store keeps data derived from the records, read by _id alone so that reading
// it costs the same however many records there are (the embedded FerretDB answers
// any other query by reading the whole collection): per-day counters for the stats
// (counters.go) and each pipeline's cards (cards.go). A record's
// countedLevel says how much of it the derived data holds.
const (
	countedNothing = 0
	countedTotal   = 1 // counted in its day's total
	countedFinal   = 2 // also under its terminal status, and summarised final
)

// levelOf is the counted level a record with this status should reach.
func levelOf(status string) int {
	if model.IsTerminal(status) {
		return countedFinal
	}
	return countedTotal
}

// recordChanged brings the derived data up to date with record id after a change
// of status, towards level. Raising countedLevel and reading the record as it was
// is one atomic step (on FerretDB under the record's lock, see stripedLocks), so of
// concurrent or retried callers exactly one counts. A
// crash between that step and the counters' update leaves the record uncounted
// (RebuildDerived repairs it).
func (s *Store) recordChanged(ctx context.Context, id string, level int) error {
	var before model.Record
	unlock := s.lockDoc(ctx, &recordLocks, id)
	err := s.records.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$max", Value: bson.D{{Key: "countedLevel", Value: level}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.Before)).Decode(&before)
	unlock()
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil // deleted meanwhile: its deletion took care of the rest
	}
	if err != nil {
		return fmt.Errorf("mark record %s counted: %w", id, err)
	}
	// Counters and cards are different documents: written at the same time.
	var countErr error
	var wg sync.WaitGroup
	if level > before.CountedLevel {
		wg.Go(func() { countErr = s.countRecord(ctx, &before, before.CountedLevel, level) })
	}
	noteErr := s.noteRecent(ctx, &before)
	wg.Wait()
	return errors.Join(countErr, noteErr)
}

// derivedRetryWindow is how long the derived data of a changed record keeps trying
// to catch up through a store outage, as the caller's retries would have.
const derivedRetryWindow = 24 * time.Hour

// derivedReadWait bounds how long a reader of derived data waits for the updates in
// flight (a store outage may hold one back for long): it then reads what is there.
const derivedReadWait = 2 * time.Second

// thenDerived runs write, a change of record id, and when it succeeds brings the
// derived data up to date towards level (recordChanged) after returning: the
// derived data is not the caller's to wait for. Readers of derived data wait for
// the updates in flight in this process (awaitDerived), so that what one sees
// after a record changed (its stats, its pipeline's recent records) includes the
// change; another process sees it a moment later. A crash before the update is
// done leaves the record counted at its previous level, as a crash between the two
// writes always could (countedLevel says where it is).
func (s *Store) thenDerived(ctx context.Context, id string, level int, write func() error) error {
	// Counted in flight before the write: a reader that sees the change waits for
	// its update.
	seq := s.pending.start()
	if err := write(); err != nil {
		s.pending.end(seq)
		return err
	}
	go func() {
		defer s.pending.end(seq)
		bg := context.WithoutCancel(ctx)
		deadline := time.Now().Add(derivedRetryWindow)
		for delay := 100 * time.Millisecond; ; delay = min(2*delay, 30*time.Second) {
			c, cancel := context.WithTimeout(bg, 30*time.Second)
			err := s.recordChanged(c, id, level)
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) || s.closing.Load() {
				slog.Warn("derived data of a record not updated (stats and recent records miss the change until the next start repairs it)",
					"record", id, "error", err)
				return
			}
			time.Sleep(delay)
		}
	}()
	return nil
}

// awaitDerived returns once the derived-data updates started before it are done
// (see thenDerived), ctx ends or derivedReadWait has passed.
func (s *Store) awaitDerived(ctx context.Context) {
	s.pending.wait(ctx, derivedReadWait)
}

// pendingUpdates are the derived-data updates in flight (thenDerived).
type pendingUpdates struct {
	mu      sync.Mutex
	next    uint64
	running map[uint64]struct{}
	changed chan struct{} // closed, and replaced, whenever an update ends
}

func (p *pendingUpdates) start() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running == nil {
		p.running, p.changed = map[uint64]struct{}{}, make(chan struct{})
	}
	seq := p.next
	p.next++
	p.running[seq] = struct{}{}
	return seq
}

func (p *pendingUpdates) end(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running, seq)
	close(p.changed)
	p.changed = make(chan struct{})
}

// wait returns once no update started before it is in flight, ctx ends or max has
// passed. Updates started meanwhile are not waited for.
func (p *pendingUpdates) wait(ctx context.Context, max time.Duration) {
	p.mu.Lock()
	upTo := p.next
	p.mu.Unlock()
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		p.mu.Lock()
		busy := false
		for seq := range p.running {
			if seq < upTo {
				busy = true
				break
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if !busy {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-timer.C:
			return
		}
	}
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
