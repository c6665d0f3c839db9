package logs

import (
	"context"
	"errors"
	"time"
)

// Stream names one log: a stage of a record, or one task of a multi-task stage.
// ProjectID and PipelineID are carried along so that deleting a project or a
// pipeline can delete its logs; the key of a stream is (RecordID, Stage, Task).
type Stream struct {
	ProjectID  string
	PipelineID string
	RecordID   string
	Stage      string
	Task       string // "" for the stage itself
}

func (s Stream) key() string { return s.RecordID + "\x00" + s.Stage + "\x00" + s.Task }

// Head is the small per-stream document: how many lines the stream has, how many
// of them are sealed in chunks, and the rest (the tail) itself. Readers poll it;
// writers replace it with a compare-and-set on Lines.
type Head struct {
	Stream
	// Chunks is the number of sealed chunks (numbered 0 .. Chunks-1).
	Chunks int64
	// Sealed is the number of lines in sealed chunks.
	Sealed int64
	// Tail holds lines Sealed, Sealed+1, ... that are not sealed yet.
	Tail []string
	// Lines is Sealed + len(Tail): the stream's length, and the head's version.
	Lines int64
	// Attempt is the stage attempt (1-based) of the last writer.
	Attempt int
	// Writer identifies the writer that stored the head (one random value per
	// Writer): a writer whose answer from the store was lost tells its own write
	// from another writer's by it.
	Writer string
	// Closed means the last writer closed: everything is sealed, or, for a log
	// that never needed a chunk, all of it is the tail.
	Closed bool
}

// Chunk is a sealed, immutable run of consecutive lines of a stream.
type Chunk struct {
	Stream
	// Seq numbers the chunk within its stream: 0, 1, 2, ... without gaps.
	Seq int64
	// First is the stream line number of Lines[0].
	First int64
	// Lines are the lines, without their newline, valid UTF-8.
	Lines []string
	// Attempt is the stage attempt that sealed the chunk.
	Attempt int
}

// End is the line number after the chunk's last line.
func (c *Chunk) End() int64 { return c.First + int64(len(c.Lines)) }

// ErrVersion means a head changed since it was read: another writer got there.
var ErrVersion = errors.New("logs: log head changed meanwhile")

// ErrChunkExists means a chunk to insert is stored already.
var ErrChunkExists = errors.New("logs: chunk exists")

// HeadReader reads heads and chunks; the store implements it.
type HeadReader interface {
	// GetLogHead returns the head of s, or nil (and no error) when s has none.
	GetLogHead(ctx context.Context, s Stream) (*Head, error)
	// LogChunkAt returns the number of the sealed chunk of s holding line, or -1.
	LogChunkAt(ctx context.Context, s Stream, line int64) (int64, error)
	// LogChunks calls fn with the sealed chunks seq, seq+1, ... of s (at most
	// limit), in order; it stops at the first error fn returns.
	LogChunks(ctx context.Context, s Stream, seq int64, limit int, fn func(*Chunk) error) error
}

// Store reads and writes logs; the store implements it.
type Store interface {
	HeadReader
	// InsertLogChunks stores sealed chunks in order. Without replace it stops with
	// ErrChunkExists at a chunk that is stored already; with replace it overwrites
	// it.
	InsertLogChunks(ctx context.Context, chunks []*Chunk, replace bool) error
	// PutLogHead stores h if the stored head still has version lines (0 and no
	// head: it creates it); otherwise it returns ErrVersion.
	PutLogHead(ctx context.Context, h *Head, version int64) error
}

// Defaults of Sink and Reader.
const (
	DefaultFlushDelay      = 25 * time.Millisecond
	DefaultMaxLineBytes    = 64 << 10
	DefaultMaxTailLines    = 512
	DefaultMaxTailBytes    = 64 << 10
	DefaultMaxChunkLines   = 4096
	DefaultMaxChunkBytes   = 256 << 10
	DefaultMaxPendingBytes = 2 << 20
	DefaultPollInterval    = 40 * time.Millisecond
	DefaultDoneInterval    = 200 * time.Millisecond
	// chunkWindow bounds the chunks one LogChunks call reads.
	chunkWindow = 16
)

// TaskAttemptPrefix starts the banner that opens a retried attempt's lines in a
// task's log ("Task: web attempt 2"): the worker writes it, readers find attempts by it.
func TaskAttemptPrefix(task string) string { return "Task: " + task + " attempt " }
