package store

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/logs"
)

// Stage logs live in two collections (see package logs):
//
// "logHeads", one small document per stream, polled by followers and replaced by
// the stream's writer with a compare-and-set on its line count:
//
//	{_id: "<record>/<stage>/<task>", recordID, pipelineID, projectID, stage, task,
//	 chunks, sealed, tail: [lines not sealed yet], lines, attempt, closed, updated}
//
// "logs", the sealed chunks, inserted once and never updated:
//
//	{_id: "<record>/<stage>/<task>/<seq>", recordID, pipelineID, projectID, stage,
//	 task, seq, first, end, n, bytes, enc: "flate", data: BinData(lines joined
//	 by "\n", DEFLATE-compressed), attempt, created}
//
// Writing a chunk never needs a query, which matters on the embedded FerretDB: it
// answers every query on a collection by reading the whole collection, and the
// chunks are the big one. Compressing chunks (build output shrinks 5-10 times)
// cuts what FerretDB converts and scans and what MongoDB sends and stores.
type logHead struct {
	ID         string    `bson:"_id"`
	ProjectID  string    `bson:"projectID"`
	PipelineID string    `bson:"pipelineID"`
	RecordID   string    `bson:"recordID"`
	Stage      string    `bson:"stage"`
	Task       string    `bson:"task"`
	Chunks     int64     `bson:"chunks"`
	Sealed     int64     `bson:"sealed"`
	Tail       []string  `bson:"tail"`
	Lines      int64     `bson:"lines"`
	Attempt    int       `bson:"attempt"`
	Closed     bool      `bson:"closed"`
	Writer     string    `bson:"writer,omitempty"`
	Updated    time.Time `bson:"updated"`
}

type logChunk struct {
	ID         string    `bson:"_id"`
	ProjectID  string    `bson:"projectID"`
	PipelineID string    `bson:"pipelineID"`
	RecordID   string    `bson:"recordID"`
	Stage      string    `bson:"stage"`
	Task       string    `bson:"task"`
	Seq        int64     `bson:"seq"`
	First      int64     `bson:"first"`
	End        int64     `bson:"end"`
	N          int       `bson:"n"`
	Bytes      int       `bson:"bytes"`
	Enc        string    `bson:"enc"`
	Data       []byte    `bson:"data"`
	Attempt    int       `bson:"attempt"`
	Created    time.Time `bson:"created"`
}

// chunkEncoding is how logChunk.Data holds the lines.
const chunkEncoding = "flate"

var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
}}

// encodeLines joins lines with "\n" (no line holds one) and compresses them.
func encodeLines(lines []string) ([]byte, int, error) {
	var buf bytes.Buffer
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	fw.Reset(&buf)
	size := 0
	for i, l := range lines {
		if i > 0 {
			if _, err := fw.Write([]byte{'\n'}); err != nil {
				return nil, 0, err
			}
		}
		if _, err := io.WriteString(fw, l); err != nil {
			return nil, 0, err
		}
		size += len(l) + 1
	}
	if err := fw.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), size, nil
}

func decodeLines(d *logChunk) ([]string, error) {
	if d.Enc != chunkEncoding {
		return nil, fmt.Errorf("log chunk %s: unknown encoding %q", d.ID, d.Enc)
	}
	raw, err := io.ReadAll(flate.NewReader(bytes.NewReader(d.Data)))
	if err != nil {
		return nil, fmt.Errorf("log chunk %s: %w", d.ID, err)
	}
	if d.N == 0 {
		return nil, nil
	}
	lines := strings.Split(string(raw), "\n")
	if len(lines) != d.N {
		return nil, fmt.Errorf("log chunk %s: %d lines, want %d", d.ID, len(lines), d.N)
	}
	return lines, nil
}

// logStreamID is the _id of a stream's head. Record IDs and task names are escaped
// so that "/" separates the parts unambiguously; stage names are plain words.
func logStreamID(s logs.Stream) string {
	return url.PathEscape(s.RecordID) + "/" + s.Stage + "/" + url.PathEscape(s.Task)
}

// logHeads is the collection of stream heads (next to s.logs, the chunks).
func (s *Store) logHeads() *mongo.Collection { return s.db.Collection("logHeads") }

func logStreamFilter(s logs.Stream) bson.D {
	return bson.D{{Key: "recordID", Value: s.RecordID}, {Key: "stage", Value: s.Stage}, {Key: "task", Value: s.Task}}
}

func (s *Store) ensureLogIndexes(ctx context.Context) error {
	specs := []struct {
		coll  *mongo.Collection
		model mongo.IndexModel
	}{
		{s.logs, mongo.IndexModel{Keys: bson.D{{Key: "recordID", Value: 1}, {Key: "stage", Value: 1}, {Key: "task", Value: 1}, {Key: "seq", Value: 1}}, Options: options.Index().SetUnique(true)}},
		{s.logHeads(), mongo.IndexModel{Keys: bson.D{{Key: "recordID", Value: 1}}}},
		{s.logHeads(), mongo.IndexModel{Keys: bson.D{{Key: "pipelineID", Value: 1}}}},
		{s.logHeads(), mongo.IndexModel{Keys: bson.D{{Key: "projectID", Value: 1}}}},
	}
	for _, spec := range specs {
		if _, err := spec.coll.Indexes().CreateOne(ctx, spec.model); err != nil {
			return fmt.Errorf("create index on %s: %w", spec.coll.Name(), err)
		}
	}
	return nil
}

// GetLogHead returns the head of a log stream, or nil when it has none.
func (s *Store) GetLogHead(ctx context.Context, st logs.Stream) (*logs.Head, error) {
	var d logHead
	err := s.logHeads().FindOne(ctx, bson.D{{Key: "_id", Value: logStreamID(st)}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &logs.Head{
		Stream: logs.Stream{ProjectID: d.ProjectID, PipelineID: d.PipelineID, RecordID: d.RecordID, Stage: d.Stage, Task: d.Task},
		Chunks: d.Chunks, Sealed: d.Sealed, Tail: d.Tail, Lines: d.Lines, Attempt: d.Attempt, Closed: d.Closed,
		Writer: d.Writer,
	}, nil
}

// PutLogHead replaces a stream's head if its stored line count is still version,
// or creates it when version is 0; otherwise it returns logs.ErrVersion.
func (s *Store) PutLogHead(ctx context.Context, h *logs.Head, version int64) error {
	tail := h.Tail
	if tail == nil {
		tail = []string{}
	}
	d := logHead{
		ID: logStreamID(h.Stream), ProjectID: h.ProjectID, PipelineID: h.PipelineID, RecordID: h.RecordID,
		Stage: h.Stage, Task: h.Task, Chunks: h.Chunks, Sealed: h.Sealed, Tail: tail, Lines: h.Lines,
		Attempt: h.Attempt, Closed: h.Closed, Writer: h.Writer, Updated: now(),
	}
	if version == 0 {
		_, err := s.logHeads().InsertOne(ctx, d)
		if err = writeErr(err); errors.Is(err, ErrConflict) {
			return logs.ErrVersion
		}
		return err
	}
	if s.scansQueries(ctx) {
		return s.putLogHeadLocked(ctx, d, version)
	}
	res, err := s.logHeads().ReplaceOne(ctx, bson.D{{Key: "_id", Value: d.ID}, {Key: "lines", Value: version}}, d)
	if err != nil {
		return err
	}
	if res.MatchedCount == 0 {
		return logs.ErrVersion
	}
	return nil
}

// logHeadLocks serialise this process's compare-and-set of log heads on the
// embedded FerretDB (see stripedLocks). FerretDB (v1.24) answers the filter
// {_id, lines} by reading and decoding every head there is, and then applies the
// replacement with nothing in between to stop another writer: the compare-and-set
// was neither cheap nor atomic there. Under the lock, a read of the head by _id
// alone and a replacement by _id alone are both.
var logHeadLocks stripedLocks

func (s *Store) putLogHeadLocked(ctx context.Context, d logHead, version int64) error {
	defer s.lockDoc(ctx, &logHeadLocks, d.ID)()
	var cur struct {
		Lines int64 `bson:"lines"`
	}
	err := s.logHeads().FindOne(ctx, bson.D{{Key: "_id", Value: d.ID}},
		options.FindOne().SetProjection(bson.D{{Key: "lines", Value: 1}})).Decode(&cur)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return logs.ErrVersion // deleted: the writer finds out when it reads the head
	}
	if err != nil {
		return err
	}
	if cur.Lines != version {
		return logs.ErrVersion
	}
	res, err := s.logHeads().ReplaceOne(ctx, bson.D{{Key: "_id", Value: d.ID}}, d)
	if err != nil {
		return err
	}
	if res.MatchedCount == 0 {
		return logs.ErrVersion
	}
	return nil
}

// InsertLogChunks stores sealed chunks in order; a chunk stored already stops it
// with logs.ErrChunkExists, or is overwritten when replace is set.
func (s *Store) InsertLogChunks(ctx context.Context, chunks []*logs.Chunk, replace bool) error {
	docs := make([]any, len(chunks))
	for i, c := range chunks {
		data, size, err := encodeLines(c.Lines)
		if err != nil {
			return err
		}
		docs[i] = logChunk{
			ID: logStreamID(c.Stream) + "/" + strconv.FormatInt(c.Seq, 10), ProjectID: c.ProjectID, PipelineID: c.PipelineID,
			RecordID: c.RecordID, Stage: c.Stage, Task: c.Task, Seq: c.Seq, First: c.First, End: c.End(),
			N: len(c.Lines), Bytes: size, Enc: chunkEncoding, Data: data, Attempt: c.Attempt, Created: now(),
		}
	}
	if !replace {
		_, err := s.logs.InsertMany(ctx, docs)
		if errors.Is(writeErr(err), ErrConflict) {
			return fmt.Errorf("%w: %v", logs.ErrChunkExists, err)
		}
		return err
	}
	for _, d := range docs {
		id := d.(logChunk).ID
		if _, err := s.logs.ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, d, options.Replace().SetUpsert(true)); err != nil {
			return err
		}
	}
	return nil
}

// LogChunkAt returns the number of the sealed chunk holding line, or -1.
func (s *Store) LogChunkAt(ctx context.Context, st logs.Stream, line int64) (int64, error) {
	filter := append(logStreamFilter(st),
		bson.E{Key: "first", Value: bson.D{{Key: "$lte", Value: line}}},
		bson.E{Key: "end", Value: bson.D{{Key: "$gt", Value: line}}})
	var d struct {
		Seq int64 `bson:"seq"`
	}
	err := s.logs.FindOne(ctx, filter, options.FindOne().SetProjection(bson.D{{Key: "seq", Value: 1}})).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return -1, nil
	}
	if err != nil {
		return -1, err
	}
	return d.Seq, nil
}

// LogChunks calls fn with sealed chunks seq, seq+1, ... of a stream (at most
// limit), in order, from a cursor.
func (s *Store) LogChunks(ctx context.Context, st logs.Stream, seq int64, limit int, fn func(*logs.Chunk) error) error {
	filter := append(logStreamFilter(st), bson.E{Key: "seq", Value: bson.D{{Key: "$gte", Value: seq}, {Key: "$lt", Value: seq + int64(limit)}}})
	cur, err := s.logs.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "seq", Value: 1}}).SetBatchSize(4))
	if err != nil {
		return err
	}
	defer func() { _ = cur.Close(ctx) }()
	for cur.Next(ctx) {
		var d logChunk
		if err := cur.Decode(&d); err != nil {
			return err
		}
		lines, err := decodeLines(&d)
		if err != nil {
			return err
		}
		c := &logs.Chunk{
			Stream: logs.Stream{ProjectID: d.ProjectID, PipelineID: d.PipelineID, RecordID: d.RecordID, Stage: d.Stage, Task: d.Task},
			Seq:    d.Seq, First: d.First, Lines: lines, Attempt: d.Attempt,
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return cur.Err()
}

// deleteLogs deletes the logs of the streams whose field (recordID, pipelineID or
// projectID) is id: the chunks by record, then the heads.
func (s *Store) deleteLogs(ctx context.Context, field, id string) error {
	records := []string{id}
	if field != "recordID" {
		ids, err := s.logHeads().Distinct(ctx, "recordID", bson.D{{Key: field, Value: id}})
		if err != nil {
			return fmt.Errorf("delete logs: %w", err)
		}
		records = records[:0]
		for _, v := range ids {
			if r, ok := v.(string); ok {
				records = append(records, r)
			}
		}
	}
	for len(records) > 0 {
		batch := records[:min(len(records), 500)]
		records = records[len(batch):]
		if _, err := s.logs.DeleteMany(ctx, bson.D{{Key: "recordID", Value: bson.D{{Key: "$in", Value: batch}}}}); err != nil {
			return fmt.Errorf("delete logs: %w", err)
		}
	}
	if _, err := s.logHeads().DeleteMany(ctx, bson.D{{Key: field, Value: id}}); err != nil {
		return fmt.Errorf("delete logs: %w", err)
	}
	return nil
}
