package logs

import (
	"context"
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

// Chunk is a run of consecutive lines of a stream, the unit of storage.
type Chunk struct {
	Stream
	// Seq numbers the chunk within its stream: 0, 1, 2, ... without gaps.
	Seq int64
	// First is the stream line number of Lines[0].
	First int64
	// N is the number of lines; it is set even when Lines were not read.
	N int
	// Lines are the lines, without their newline, valid UTF-8.
	Lines []string
	// Attempt is the stage attempt (1-based) that wrote the chunk.
	Attempt int
	// Closed means no line will be added: the chunk is full or its writer closed.
	Closed bool
}

// End is the line number after the chunk's last line.
func (c *Chunk) End() int64 { return c.First + int64(c.N) }

// ChunkReader reads chunks; the store implements it.
type ChunkReader interface {
	// GetLogChunk returns chunk seq of stream s, or nil (and no error) when it does
	// not exist. Without lines only N, First, Attempt and Closed are read.
	GetLogChunk(ctx context.Context, s Stream, seq int64, withLines bool) (*Chunk, error)
}

// ChunkStore reads and writes chunks; the store implements it.
type ChunkStore interface {
	ChunkReader
	// PutLogChunk creates chunk c or, when its first stored lines are already
	// stored, appends c.Lines[stored:] to it, and sets its N and Closed. It must be
	// called again with the stored count read back after a failure whose outcome is
	// unknown, never blindly retried.
	PutLogChunk(ctx context.Context, c *Chunk, stored int) error
}

// Defaults of Sink and Reader.
const (
	DefaultFlushDelay       = 25 * time.Millisecond
	DefaultMaxLineBytes     = 64 << 10
	DefaultMaxChunkLines    = 2048
	DefaultMaxChunkBytes    = 256 << 10
	DefaultMaxPendingChunks = 4
	DefaultPollInterval     = 40 * time.Millisecond
	DefaultDoneInterval     = 200 * time.Millisecond
	// successorProbe paces the look for a chunk after an open one: one only appears
	// when the open chunk's writer died and a later attempt wrote on.
	successorProbe = time.Second
)

// lastChunk returns the stream's last chunk (without lines), or nil when the stream
// has none. Chunks have no gaps, so a galloping search over chunk numbers finds it
// in O(log n) lookups.
func lastChunk(ctx context.Context, r ChunkReader, s Stream) (*Chunk, error) {
	return searchChunks(ctx, r, s, func(*Chunk) bool { return true })
}

// chunkFor returns the last chunk whose first line is at most line: the chunk that
// holds line, or the last chunk when the stream is shorter. Nil when the stream has
// no chunk.
func chunkFor(ctx context.Context, r ChunkReader, s Stream, line int64) (*Chunk, error) {
	return searchChunks(ctx, r, s, func(c *Chunk) bool { return c.First <= line })
}

// searchChunks finds the last chunk for which ok holds, ok being true for a prefix
// of the chunks (a missing chunk counts as false).
func searchChunks(ctx context.Context, r ChunkReader, s Stream, ok func(*Chunk) bool) (*Chunk, error) {
	probe := func(seq int64) (*Chunk, error) {
		c, err := r.GetLogChunk(ctx, s, seq, false)
		if err != nil || c == nil || !ok(c) {
			return nil, err
		}
		return c, nil
	}
	best, err := probe(0)
	if err != nil || best == nil {
		return nil, err
	}
	lo, hi := int64(0), int64(1)
	for {
		c, err := probe(hi)
		if err != nil {
			return nil, err
		}
		if c == nil {
			break
		}
		lo, best = hi, c
		hi *= 2
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		c, err := probe(mid)
		if err != nil {
			return nil, err
		}
		if c != nil {
			lo, best = mid, c
		} else {
			hi = mid
		}
	}
	return best, nil
}
