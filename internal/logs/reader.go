package logs

import (
	"context"
	"fmt"
	"time"
)

// Reader reads stored streams, whole or followed as they grow. The zero value of
// every tuning field takes its default.
type Reader struct {
	Store HeadReader
	// Hub, if set, wakes followers as soon as a writer of this process stored
	// lines; without it (or for a writer in another process) followers poll.
	Hub *Hub
	// PollInterval paces the look at a followed stream's head.
	PollInterval time.Duration
	// DoneInterval paces the done callback while a followed stream is idle.
	DoneInterval time.Duration
}

// Len returns the number of lines stored for s.
func (r *Reader) Len(ctx context.Context, s Stream) (int64, error) {
	h, err := r.Store.GetLogHead(ctx, s)
	if err != nil || h == nil {
		return 0, err
	}
	return h.Lines, nil
}

// Copy calls emit with the stored lines of s from line number from on, chunk by
// chunk, and returns the line number after the last one emitted. emit must not keep
// the slice.
func (r *Reader) Copy(ctx context.Context, s Stream, from int64, emit func([]string) error) (int64, error) {
	c := &cursor{r: r, s: s, next: from, seq: -1}
	_, err := c.pull(ctx, emit)
	return c.next, err
}

// Follow is Copy, then waits for more lines until done reports the stream complete
// (the stage or record is over: no line will be added), emits what came meanwhile
// and returns. Done is asked only while no new line arrives, at most every
// DoneInterval. It returns ctx's error when ctx ends first.
func (r *Reader) Follow(ctx context.Context, s Stream, from int64, done func(context.Context) (bool, error), emit func([]string) error) (int64, error) {
	wake, cancel := r.Hub.Subscribe(s)
	defer cancel()
	c := &cursor{r: r, s: s, next: from, seq: -1}
	poll := orDuration(r.PollInterval, DefaultPollInterval)
	doneEvery := orDuration(r.DoneInterval, DefaultDoneInterval)
	timer := time.NewTimer(poll)
	defer timer.Stop()
	var asked time.Time
	for {
		n, err := c.pull(ctx, emit)
		if err != nil {
			return c.next, err
		}
		if n > 0 {
			continue
		}
		if time.Since(asked) >= doneEvery {
			asked = time.Now()
			finished, err := done(ctx)
			if err != nil {
				return c.next, err
			}
			if finished {
				// Everything was stored before the status said so: a last look.
				_, err := c.pull(ctx, emit)
				return c.next, err
			}
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			return c.next, ctx.Err()
		case <-wake:
		case <-timer.C:
		}
	}
}

// cursor reads a stream from line next on.
type cursor struct {
	r    *Reader
	s    Stream
	next int64 // the next line to emit
	seq  int64 // the chunk holding it, -1 when not known yet
}

// pull emits the lines from next up to what the head says now and reports how
// many: sealed chunks first (read in windows), then the head's tail.
func (c *cursor) pull(ctx context.Context, emit func([]string) error) (int, error) {
	st := c.r.Store
	h, err := st.GetLogHead(ctx, c.s)
	if err != nil || h == nil {
		return 0, err
	}
	total := 0
	for c.next < h.Sealed {
		if c.seq < 0 {
			if c.seq, err = st.LogChunkAt(ctx, c.s, c.next); err != nil {
				return total, err
			}
			if c.seq < 0 {
				return total, fmt.Errorf("log of %s/%s: no chunk holds line %d", c.s.RecordID, c.s.Stage, c.next)
			}
		}
		got := 0
		err := st.LogChunks(ctx, c.s, c.seq, chunkWindow, func(ch *Chunk) error {
			got++
			c.seq = ch.Seq + 1
			start := c.next - ch.First
			if start < 0 {
				return fmt.Errorf("log of %s/%s: chunk %d starts at line %d after line %d", c.s.RecordID, c.s.Stage, ch.Seq, ch.First, c.next)
			}
			if start >= int64(len(ch.Lines)) {
				return nil
			}
			lines := ch.Lines[start:]
			c.next = ch.End()
			total += len(lines)
			return emit(lines)
		})
		if err != nil {
			return total, err
		}
		if got == 0 {
			// The head counts chunks that are gone: the record was deleted.
			return total, nil
		}
	}
	if start := c.next - h.Sealed; start >= 0 && start < int64(len(h.Tail)) {
		lines := h.Tail[start:]
		c.next = h.Lines
		total += len(lines)
		if err := emit(lines); err != nil {
			return total, err
		}
	}
	if c.next >= h.Sealed {
		// The tail's lines go into chunk h.Chunks when sealed.
		c.seq = h.Chunks
	}
	return total, nil
}
