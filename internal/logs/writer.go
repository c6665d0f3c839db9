package logs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ErrClosed is returned by writes to a closed Writer.
var ErrClosed = errors.New("logs: writer closed")

// Target is the log a Writer appends to, and what it must not reveal.
type Target struct {
	Stream
	// Attempt is the stage attempt (1-based), kept with the chunks it seals.
	Attempt int
	// Secrets are replaced by Mask in everything stored.
	Secrets []string
}

// Sink opens Writers on a store. The zero value of every tuning field takes its
// default.
type Sink struct {
	Store Store
	// Hub, if set, is told of every stored head (see ProcessHub).
	Hub *Hub
	// Logger reports storage failures (default slog.Default()).
	Logger *slog.Logger

	FlushDelay      time.Duration // how long a line may wait for company before it is stored
	MaxLineBytes    int           // longer lines are cut with a marker
	MaxTailLines    int           // the head's tail is sealed into a chunk beyond these
	MaxTailBytes    int
	MaxChunkLines   int
	MaxChunkBytes   int
	MaxPendingBytes int           // lines waiting for the store before Write blocks
	RetryFor        time.Duration // how long a failing store write is retried (default 2m)
	OpTimeout       time.Duration // bound of one store operation (default 15s)
}

// OpenLog opens the log of t for writing; it is Open for callers that only want an
// io.WriteCloser.
func (s *Sink) OpenLog(ctx context.Context, t Target) (io.WriteCloser, error) {
	return s.Open(ctx, t)
}

// Open opens the log of t for writing, after whatever the stream already holds (the
// lines of an earlier attempt). Close must be called: it stores the last lines.
//
// Open does not wait for the store: the writer reads the stream's head in the
// background, before it stores its first lines, so the step starts meanwhile. A
// store that stays unreachable for RetryFor is reported by Close, as for writes.
func (s *Sink) Open(ctx context.Context, t Target) (*Writer, error) {
	w := &Writer{
		id:         rand.Text(),
		store:      s.Store,
		hub:        s.Hub,
		log:        s.Logger,
		target:     t,
		mask:       NewMasker(t.Secrets),
		kickC:      make(chan struct{}, 1),
		done:       make(chan struct{}),
		ctx:        context.WithoutCancel(ctx),
		delay:      orDuration(s.FlushDelay, DefaultFlushDelay),
		maxLine:    orInt(s.MaxLineBytes, DefaultMaxLineBytes),
		maxTailN:   orInt(s.MaxTailLines, DefaultMaxTailLines),
		maxTailB:   orInt(s.MaxTailBytes, DefaultMaxTailBytes),
		maxChunkN:  orInt(s.MaxChunkLines, DefaultMaxChunkLines),
		maxChunkB:  orInt(s.MaxChunkBytes, DefaultMaxChunkBytes),
		maxPending: orInt(s.MaxPendingBytes, DefaultMaxPendingBytes),
		retry:      orDuration(s.RetryFor, 2*time.Minute),
		opTime:     orDuration(s.OpTimeout, 15*time.Second),
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.cond = sync.NewCond(&w.mu)
	w.timer = time.AfterFunc(time.Hour, w.kick)
	w.timer.Stop()
	go w.flushLoop()
	return w, nil
}

// Writer is the log of one stream being written. It is safe for concurrent use.
// Write never fails because of the store: when the store stays unreachable for
// RetryFor, later lines are dropped and Close reports the error, so a step is never
// stuck on its output.
type Writer struct {
	id     string // see Head.Writer
	store  Store
	hub    *Hub
	log    *slog.Logger
	target Target
	ctx    context.Context
	kickC  chan struct{}
	done   chan struct{}
	timer  *time.Timer

	delay                time.Duration
	retry, opTime        time.Duration
	maxLine              int
	maxTailN, maxTailB   int
	maxChunkN, maxChunkB int
	maxPending           int

	// The stored head, as far as this writer knows; the flusher's alone.
	head   Head
	stored bool
	gone   bool // the stored log was deleted (with its record): write no more

	mu           sync.Mutex
	cond         *sync.Cond
	mask         *Masker
	line         []byte // the line being read, up to maxLine bytes
	lineLen      int    // its full length so far
	pending      []string
	pendingBytes int
	scheduled    bool // pending lines wait for the delayed flush
	pendingSince time.Time
	closed       bool
	err          error
	dropped      int64
}

// adopt takes h (nil: none) as the stored state to write after.
func (w *Writer) adopt(h *Head) {
	w.stored = h != nil
	if h == nil {
		w.head = Head{Stream: w.target.Stream}
		return
	}
	w.head = *h
	w.head.Tail = append([]string(nil), h.Tail...)
}

// Write stores p's lines. It blocks only while MaxPendingBytes of lines wait for
// the store.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, ErrClosed
	}
	w.split(w.mask.Write(p))
	for w.pendingBytes >= w.maxPending && w.err == nil {
		w.cond.Wait()
	}
	return len(p), nil
}

// Close stores what is left (a last line without newline included), closes the
// stream (sealing it, see plan) and waits for the store. It returns the first storage error, if any.
func (w *Writer) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		w.split(w.mask.Flush())
		if w.lineLen > 0 {
			w.endLine()
		}
		w.kick()
	}
	w.mu.Unlock()
	<-w.done
	w.timer.Stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil && w.dropped > 0 {
		return fmt.Errorf("%w (%d lines not stored)", w.err, w.dropped)
	}
	return w.err
}

// split cuts b into lines; the last piece without newline waits for the rest.
func (w *Writer) split(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		seg := b
		if i >= 0 {
			seg = b[:i]
		}
		if room := w.maxLine - len(w.line); room > 0 {
			w.line = append(w.line, seg[:min(room, len(seg))]...)
		}
		w.lineLen += len(seg)
		if i < 0 {
			return
		}
		w.endLine()
		b = b[i+1:]
	}
}

// endLine turns the line read so far into a pending line.
func (w *Writer) endLine() {
	b := w.line
	var text string
	if w.lineLen > len(b) {
		text = sanitize(trimIncompleteRune(b)) + fmt.Sprintf("... [line truncated: %d bytes]", w.lineLen)
	} else {
		text = sanitize(bytes.TrimSuffix(b, []byte{'\r'}))
	}
	w.line, w.lineLen = w.line[:0], 0
	if cap(w.line) > 4<<10 && len(text) < 1<<10 {
		w.line = nil // give back a long line's buffer
	}
	if w.err != nil {
		w.dropped++
		return
	}
	w.pending = append(w.pending, text)
	w.pendingBytes += len(text)
	if w.pendingBytes >= w.maxChunkB || len(w.pending) >= w.maxChunkN {
		w.kick()
		return
	}
	if !w.scheduled {
		w.scheduled = true
		w.pendingSince = time.Now()
		w.timer.Reset(w.delay)
	}
}

func (w *Writer) kick() {
	select {
	case w.kickC <- struct{}{}:
	default:
	}
}

// flushLoop stores pending lines when a chunk's worth waits or the first of them
// has waited FlushDelay, and everything when the writer closes. Storing runs
// without the lock, so the step's output keeps flowing meanwhile.
func (w *Writer) flushLoop() {
	defer close(w.done)
	if err := w.load(); err != nil {
		w.mu.Lock()
		w.err = fmt.Errorf("open log of %s/%s: %w", w.target.RecordID, w.target.Stage, err)
		w.dropped += int64(len(w.pending))
		w.pending, w.pendingBytes = nil, 0
		w.log.Error("log lines are not stored", "record", w.target.RecordID, "stage", w.target.Stage, "task", w.target.Task, "error", err)
		w.cond.Broadcast()
		w.mu.Unlock()
	}
	for {
		<-w.kickC
		w.mu.Lock()
		final := w.closed
		due := final || w.pendingBytes >= w.maxChunkB || len(w.pending) >= w.maxChunkN ||
			(w.scheduled && time.Since(w.pendingSince) >= w.delay)
		if !due {
			if w.scheduled {
				w.timer.Reset(w.delay - time.Since(w.pendingSince))
			}
			w.mu.Unlock()
			continue
		}
		batch := w.pending
		w.pending, w.pendingBytes, w.scheduled = nil, 0, false
		failed := w.err != nil
		w.mu.Unlock()

		var err error
		if !failed {
			err = w.commit(batch, final)
		}

		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
			w.dropped += int64(len(batch))
			w.log.Error("log lines are not stored", "record", w.target.RecordID, "stage", w.target.Stage, "task", w.target.Task, "error", err)
		}
		if w.err != nil {
			// Keep memory bounded: what cannot be stored is dropped.
			w.dropped += int64(len(w.pending))
			w.pending, w.pendingBytes = nil, 0
		}
		w.cond.Broadcast()
		w.mu.Unlock()
		if final {
			return
		}
	}
}

// load reads the stored head to write after, retrying a failing store for
// RetryFor. A first attempt expects none and reads nothing: a stream that has lines
// all the same (a stage run again by a reset workflow) makes its first write fail
// its compare-and-set, and commit reads the head then.
func (w *Writer) load() error {
	if w.target.Attempt <= 1 {
		w.adopt(nil)
		return nil
	}
	deadline := time.Now().Add(w.retry)
	backoff := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(w.ctx, w.opTime)
		h, err := w.store.GetLogHead(ctx, w.target.Stream)
		cancel()
		if err == nil {
			w.adopt(h)
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

// commit appends batch to the stored stream: lines that overflow the head's tail
// are sealed into chunks, and the head is replaced with a compare-and-set on its
// line count. After a failure whose outcome is unknown it reads the head back, so
// a line is never stored twice; when another writer moved the head it writes after
// that writer's lines.
func (w *Writer) commit(batch []string, final bool) error {
	if w.gone || len(batch) == 0 && (!final || !w.stored || (w.head.Closed && len(w.head.Tail) == 0)) {
		return nil
	}
	deadline := time.Now().Add(w.retry)
	backoff := 50 * time.Millisecond
	for {
		next, chunks := w.plan(batch, final)
		err := w.apply(&next, chunks)
		if err == nil {
			w.head, w.stored = next, true
			w.hub.Notify(w.target.Stream)
			return nil
		}
		ctx, cancel := context.WithTimeout(w.ctx, w.opTime)
		h, rerr := w.store.GetLogHead(ctx, w.target.Stream)
		cancel()
		if rerr == nil {
			if h != nil && h.Writer == w.id && h.Lines == next.Lines && h.Chunks == next.Chunks && h.Closed == next.Closed {
				w.adopt(h) // it landed after all
				w.hub.Notify(w.target.Stream)
				return nil
			}
			if h == nil && w.stored {
				// Deleted under this writer: do not bring the log back.
				w.gone = true
				return nil
			}
			w.adopt(h)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("store log of %s/%s: %w", w.target.RecordID, w.target.Stage, err)
		}
		if !errors.Is(err, ErrVersion) {
			time.Sleep(backoff)
			backoff = min(backoff*2, 2*time.Second)
		}
	}
}

// plan computes the head after batch, and the chunks to seal: when the tail
// outgrows its limits it is cut into chunks, and a last piece that fits the limits
// stays the tail. When the writer closes, everything is sealed but a log short
// enough to have stayed the tail all along.
func (w *Writer) plan(batch []string, final bool) (Head, []*Chunk) {
	next := w.head
	tail := make([]string, 0, len(w.head.Tail)+len(batch))
	tail = append(append(tail, w.head.Tail...), batch...)
	size := 0
	for _, l := range tail {
		size += len(l)
	}
	fits := len(tail) <= w.maxTailN && size <= w.maxTailB
	// A closed stream is sealed whole, unless it is short enough to stay the head's
	// tail without ever having had a chunk: a short log costs one write.
	sealAll := final && (!fits || next.Chunks > 0)
	var chunks []*Chunk
	if sealAll || !fits {
		for len(tail) > 0 {
			n, b := 0, 0
			for n < len(tail) && n < w.maxChunkN && (n == 0 || b+len(tail[n]) <= w.maxChunkB) {
				b += len(tail[n])
				n++
			}
			if !sealAll && n == len(tail) && n <= w.maxTailN && b <= w.maxTailB {
				break
			}
			chunks = append(chunks, &Chunk{Stream: w.target.Stream, Seq: next.Chunks, First: next.Sealed, Lines: tail[:n:n], Attempt: w.target.Attempt})
			next.Chunks++
			next.Sealed += int64(n)
			tail = tail[n:]
		}
	}
	next.Stream = w.target.Stream
	next.Tail = tail
	next.Lines = next.Sealed + int64(len(tail))
	next.Attempt = w.target.Attempt
	next.Closed = final
	next.Writer = w.id
	return next, chunks
}

// apply stores the sealed chunks, then the head that counts them.
func (w *Writer) apply(next *Head, chunks []*Chunk) error {
	if len(chunks) > 0 {
		ctx, cancel := context.WithTimeout(w.ctx, w.opTime)
		defer cancel()
		err := w.store.InsertLogChunks(ctx, chunks, false)
		if errors.Is(err, ErrChunkExists) {
			// Stored by this writer's own earlier try, or by a writer that died
			// before counting it: overwrite it. Counted by the head already: this
			// writer is behind another one.
			h, herr := w.store.GetLogHead(ctx, w.target.Stream)
			if herr != nil {
				return herr
			}
			if h != nil && h.Chunks > chunks[0].Seq {
				return ErrVersion
			}
			err = w.store.InsertLogChunks(ctx, chunks, true)
		}
		if err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.opTime)
	defer cancel()
	version := int64(0)
	if w.stored {
		version = w.head.Lines
	}
	return w.store.PutLogHead(ctx, next, version)
}

// sanitize makes b a valid UTF-8 string without NUL bytes.
func sanitize(b []byte) string {
	if utf8.Valid(b) && bytes.IndexByte(b, 0) < 0 {
		return string(b)
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// trimIncompleteRune drops a multi-byte character cut in half at the end of b.
func trimIncompleteRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			return b
		}
	}
	return b
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orInt(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
