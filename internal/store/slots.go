package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// The capacity queue: one document per record that wants to run or runs on a cloud,
// ordered by the record's creation time, then by a sequence number from a counter
// (records made in the same millisecond, or without a time, in the order they
// asked). The first N of a cloud's queue run;
// the others wait. Without transactions (FerretDB has none), every step is one
// atomic single-document write: the counter's $inc, the insert of a place keyed by
// the record ID (a retried activity finds its place again), its delete.

// Slot is a record's place in its cloud's queue.
type Slot struct {
	RecordID string    `bson:"_id"`
	Cloud    string    `bson:"cloud"`
	Seq      int64     `bson:"seq"`
	Created  time.Time `bson:"created"` // the record's creation time
	QueuedAt time.Time `bson:"queuedAt"`
}

func (s *Store) slots() *mongo.Collection    { return s.db.Collection("slots") }
func (s *Store) counters() *mongo.Collection { return s.db.Collection("counters") }

func (s *Store) ensureSlotIndexes(ctx context.Context) error {
	_, err := s.slots().Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "cloud", Value: 1}, {Key: "created", Value: 1}, {Key: "seq", Value: 1}}})
	if err != nil {
		return fmt.Errorf("create index on slots: %w", err)
	}
	return nil
}

// nextSeq returns the next value of the named counter, starting at 1.
func (s *Store) nextSeq(ctx context.Context, name string) (int64, error) {
	var doc struct {
		Seq int64 `bson:"seq"`
	}
	err := s.counters().FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: name}},
		bson.D{{Key: "$inc", Value: bson.D{{Key: "seq", Value: int64(1)}}}},
		options.FindOneAndUpdate().SetUpsert(true).SetReturnDocument(options.After)).Decode(&doc)
	if err != nil {
		return 0, fmt.Errorf("next %s sequence: %w", name, err)
	}
	return doc.Seq, nil
}

// EnqueueSlot puts the record in the cloud's queue after the records made before
// it (created is the record's creation time), unless it already has a place (in any
// cloud): calling it again keeps the place.
func (s *Store) EnqueueSlot(ctx context.Context, recordID, cloud string, created time.Time) (*Slot, error) {
	if sl, err := findOne[Slot](ctx, s.slots(), bson.D{{Key: "_id", Value: recordID}}); !errors.Is(err, ErrNotFound) {
		return sl, err
	}
	seq, err := s.nextSeq(ctx, "slots")
	if err != nil {
		return nil, err
	}
	sl := &Slot{RecordID: recordID, Cloud: cloud, Seq: seq, Created: created.UTC().Truncate(time.Millisecond), QueuedAt: now()}
	if _, err := s.slots().InsertOne(ctx, sl); err != nil {
		if writeErr(err) != nil && !errors.Is(writeErr(err), ErrConflict) {
			return nil, err
		}
		return findOne[Slot](ctx, s.slots(), bson.D{{Key: "_id", Value: recordID}})
	}
	return sl, nil
}

// SlotsAhead returns the places before sl in its cloud's queue, first first, at most
// limit of them (limit <= 0: all), and how many there are in all.
func (s *Store) SlotsAhead(ctx context.Context, sl *Slot, limit int64) ([]*Slot, int64, error) {
	filter := bson.D{{Key: "cloud", Value: sl.Cloud}, {Key: "$or", Value: bson.A{
		bson.D{{Key: "created", Value: bson.D{{Key: "$lt", Value: sl.Created}}}},
		bson.D{{Key: "created", Value: sl.Created}, {Key: "seq", Value: bson.D{{Key: "$lt", Value: sl.Seq}}}},
	}}}
	items, total, err := list[Slot](ctx, s.slots(), filter, bson.D{{Key: "created", Value: 1}, {Key: "seq", Value: 1}}, ListOptions{Limit: limit})
	if err != nil {
		return nil, 0, fmt.Errorf("read the queue of cloud %s: %w", sl.Cloud, err)
	}
	return items, total, nil
}

// ReleaseSlot gives the record's place up; releasing twice is harmless.
func (s *Store) ReleaseSlot(ctx context.Context, recordID string) error {
	if _, err := s.slots().DeleteOne(ctx, bson.D{{Key: "_id", Value: recordID}}); err != nil {
		return fmt.Errorf("release the place of record %s: %w", recordID, err)
	}
	return nil
}

// ListSlots returns every place of every queue, oldest first.
func (s *Store) ListSlots(ctx context.Context) ([]*Slot, error) {
	items, _, err := list[Slot](ctx, s.slots(), bson.D{}, bson.D{{Key: "seq", Value: 1}}, ListOptions{})
	return items, err
}

// SetQueuePosition shows a Pending record's place among the records waiting on its
// cloud (1: next to start); 0 removes it. A record no longer Pending is left alone,
// except that its position is always removed.
func (s *Store) SetQueuePosition(ctx context.Context, recordID string, pos int64) error {
	var err error
	if pos <= 0 {
		unlock := s.lockDoc(ctx, &recordLocks, recordID)
		_, err = s.records.UpdateOne(ctx, bson.D{{Key: "_id", Value: recordID}},
			bson.D{{Key: "$unset", Value: bson.D{{Key: "queuePosition", Value: ""}}}})
		unlock()
	} else {
		err = s.updateRecordWhile(ctx, recordID, bson.A{model.StatusPending},
			bson.D{{Key: "$set", Value: bson.D{{Key: "queuePosition", Value: pos}}}})
	}
	if err != nil {
		return fmt.Errorf("set the queue position of record %s: %w", recordID, err)
	}
	return nil
}

// PruneSlots releases the places of records that are finished or deleted: their
// workflow ended without releasing (terminated, lost). It returns how many it
// released.
func (s *Store) PruneSlots(ctx context.Context, slots []*Slot) (int, error) {
	n := 0
	for _, sl := range slots {
		r, err := s.GetRecordByID(ctx, sl.RecordID)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return n, err
		case !model.IsTerminal(r.Status):
			continue
		}
		if err := s.ReleaseSlot(ctx, sl.RecordID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
