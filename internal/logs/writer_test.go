package logs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/store"
)

func open(t *testing.T, sink *logs.Sink, s logs.Stream, attempt int, secrets ...string) *logs.Writer {
	t.Helper()
	if sink.Store == nil {
		sink.Store = st
	}
	w, err := sink.Open(context.Background(), logs.Target{Stream: s, Attempt: attempt, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWriterMasksSecrets(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		writes  []string
		want    []string
	}{
		{"secret split across two writes", []string{"secret"}, []string{"sec", "ret\n", "after\n"}, []string{"********", "after"}},
		{"multi-line secret", []string{"BEGIN\nkey-material\nEND"}, []string{"x BEGIN\n", "key-mat", "erial\nEND y\n"}, []string{"x ******** y"}},
		{"line of a multi-line secret alone", []string{"BEGIN\nkey-material\nEND"}, []string{"leak key-material\n"}, []string{"leak ********"}},
		{"several secrets", []string{"tok-abc", "pw-xyz"}, []string{"login pw-", "xyz token tok-abc\n"}, []string{"login ******** token ********"}},
		{"secret in the last line without newline", []string{"secret"}, []string{"done sec", "ret"}, []string{"done ********"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStream("unitTest")
			w := open(t, &logs.Sink{}, s, 1, tt.secrets...)
			for _, p := range tt.writes {
				mustWrite(t, w, p)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			equalLines(t, readAll(t, s), tt.want)
		})
	}
}

func TestWriterCutsLongLines(t *testing.T) {
	s := newStream("package")
	w := open(t, &logs.Sink{}, s, 1)
	long := strings.Repeat("a", 100_000)
	mustWrite(t, w, long[:30_000])
	mustWrite(t, w, long[30_000:]+"\nnext\r\n")
	// A two-byte character across the cut is not split in half.
	mustWrite(t, w, strings.Repeat("b", logs.DefaultMaxLineBytes-1)+"é"+"tail\n")
	mustWrite(t, w, strings.Repeat("c", logs.DefaultMaxLineBytes)+"\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	equalLines(t, readAll(t, s), []string{
		strings.Repeat("a", logs.DefaultMaxLineBytes) + "... [line truncated: 100000 bytes]",
		"next",
		strings.Repeat("b", logs.DefaultMaxLineBytes-1) + "... [line truncated: 65541 bytes]",
		strings.Repeat("c", logs.DefaultMaxLineBytes),
	})
}

func TestWriterBinaryOutput(t *testing.T) {
	s := newStream("unitTest")
	w := open(t, &logs.Sink{}, s, 1)
	mustWrite(t, w, "\xff\xfebin\x00ary\n\x00\x01\x02\n")
	mustWrite(t, w, "caf\xc3")
	mustWrite(t, w, "\xa9 ok\n\xe2\x82\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, s)
	equalLines(t, got, []string{"\uFFFDbin\uFFFDary", "\uFFFD\x01\x02", "café ok", "\uFFFD"})
	for _, l := range got {
		if !utf8.ValidString(l) || strings.ContainsRune(l, 0) {
			t.Fatalf("stored line %q is not clean UTF-8", l)
		}
	}
}

// chunks returns the sealed chunks of s.
func chunks(t *testing.T, s logs.Stream) []*logs.Chunk {
	t.Helper()
	var out []*logs.Chunk
	for {
		n := 0
		err := st.LogChunks(context.Background(), s, int64(len(out)), 16, func(c *logs.Chunk) error {
			n++
			out = append(out, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
	}
}

func head(t *testing.T, s logs.Stream) *logs.Head {
	t.Helper()
	h, err := st.GetLogHead(context.Background(), s)
	if err != nil || h == nil {
		t.Fatalf("head of %v: %+v, %v", s, h, err)
	}
	return h
}

func TestWriterBatchesIntoChunks(t *testing.T) {
	t.Run("full chunks", func(t *testing.T) {
		s := newStream("unitTest")
		w := open(t, &logs.Sink{MaxChunkLines: 100, FlushDelay: time.Hour}, s, 1)
		var want []string
		var b strings.Builder
		for i := range 1050 {
			fmt.Fprintf(&b, "line %d\n", i)
			want = append(want, fmt.Sprintf("line %d", i))
		}
		mustWrite(t, w, b.String())
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		equalLines(t, readAll(t, s), want)
		cs := chunks(t, s)
		if len(cs) != 11 {
			t.Fatalf("%d chunks, want 11", len(cs))
		}
		for i, c := range cs {
			wantN := 100
			if i == 10 {
				wantN = 50
			}
			if c.Seq != int64(i) || len(c.Lines) != wantN || c.First != int64(i)*100 || c.Attempt != 1 {
				t.Fatalf("chunk %d: seq %d first %d lines %d attempt %d", i, c.Seq, c.First, len(c.Lines), c.Attempt)
			}
		}
		if h := head(t, s); !h.Closed || h.Lines != 1050 || h.Sealed != 1050 || h.Chunks != 11 || len(h.Tail) != 0 {
			t.Fatalf("head %+v", h)
		}
	})
	t.Run("byte limit", func(t *testing.T) {
		s := newStream("unitTest")
		w := open(t, &logs.Sink{MaxChunkBytes: 1000, MaxTailBytes: 1000, FlushDelay: time.Hour}, s, 1)
		for range 10 {
			mustWrite(t, w, strings.Repeat("x", 299)+"\n")
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for _, c := range chunks(t, s) {
			sizes = append(sizes, len(c.Lines))
		}
		if fmt.Sprint(sizes) != "[3 3 3 1]" {
			t.Fatalf("chunks of 299-byte lines with a 1000-byte limit hold %v lines", sizes)
		}
	})
	t.Run("slow lines share a chunk", func(t *testing.T) {
		s := newStream("unitTest")
		w := open(t, &logs.Sink{FlushDelay: 20 * time.Millisecond}, s, 1)
		for i := range 5 {
			mustWrite(t, w, fmt.Sprintf("slow %d\n", i))
			time.Sleep(40 * time.Millisecond)
		}
		// Each line was stored (in the head's tail) after the flush delay.
		if h := head(t, s); h.Lines != 5 || len(h.Tail) != 5 || h.Chunks != 0 || h.Closed {
			t.Fatalf("head before close %+v", h)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// A log that never outgrew the tail stays there when closed: no chunk.
		if h := head(t, s); h.Lines != 5 || len(h.Tail) != 5 || h.Chunks != 0 || !h.Closed {
			t.Fatalf("head after close %+v", h)
		}
		if cs := chunks(t, s); len(cs) != 0 {
			t.Fatalf("%d chunks", len(cs))
		}
		equalLines(t, readAll(t, s), []string{"slow 0", "slow 1", "slow 2", "slow 3", "slow 4"})
	})
	t.Run("a full tail is sealed", func(t *testing.T) {
		s := newStream("unitTest")
		w := open(t, &logs.Sink{FlushDelay: time.Millisecond, MaxTailLines: 3}, s, 1)
		for i := range 8 {
			mustWrite(t, w, fmt.Sprintf("l%d\n", i))
			time.Sleep(5 * time.Millisecond)
		}
		waitLen(t, &logs.Reader{Store: st}, s, 8)
		h := head(t, s)
		if h.Chunks == 0 || len(h.Tail) > 3 || h.Sealed+int64(len(h.Tail)) != 8 {
			t.Fatalf("head %+v", h)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		equalLines(t, readAll(t, s), []string{"l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7"})
	})
}

func TestWriterRetriedAttemptAppends(t *testing.T) {
	s := newStream("unitTest")
	// Attempt 1 dies after its lines are stored: it never closes.
	dead := open(t, &logs.Sink{FlushDelay: time.Millisecond}, s, 1)
	mustWrite(t, dead, "Stage: UnitTest status: start\nstep 1\nstep 2\n")
	r := &logs.Reader{Store: st}
	waitLen(t, r, s, 3)

	w := open(t, &logs.Sink{}, s, 2)
	mustWrite(t, w, "Stage: UnitTest attempt 2\nStage: UnitTest status: start\nstep 1\n")
	mustWrite(t, w, "Stage: UnitTest status: finish\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Stage: UnitTest status: start", "step 1", "step 2",
		"Stage: UnitTest attempt 2", "Stage: UnitTest status: start", "step 1", "Stage: UnitTest status: finish",
	}
	equalLines(t, readAll(t, s), want)
	if h := head(t, s); h.Attempt != 2 || !h.Closed || h.Lines != 7 {
		t.Fatalf("head %+v", h)
	}

	// A third attempt continues the numbering again.
	w3 := open(t, &logs.Sink{}, s, 3)
	mustWrite(t, w3, "Stage: UnitTest attempt 3\n")
	if err := w3.Close(); err != nil {
		t.Fatal(err)
	}
	equalLines(t, readAll(t, s), append(want, "Stage: UnitTest attempt 3"))
	if h := head(t, s); h.Attempt != 3 || !h.Closed || h.Lines != 8 {
		t.Fatalf("head %+v", h)
	}

	// An attempt sealing chunks marks them as its own.
	w4 := open(t, &logs.Sink{MaxTailLines: 1}, s, 4)
	mustWrite(t, w4, "Stage: UnitTest attempt 4\nstep 1\n")
	if err := w4.Close(); err != nil {
		t.Fatal(err)
	}
	equalLines(t, readAll(t, s), append(want, "Stage: UnitTest attempt 3", "Stage: UnitTest attempt 4", "step 1"))
	cs := chunks(t, s)
	if len(cs) != 1 || cs[0].First != 0 || len(cs[0].Lines) != 10 || cs[0].Attempt != 4 {
		t.Fatalf("chunks %+v", cs)
	}
}

// countingHeadStore counts the reads of heads.
type countingHeadStore struct {
	logs.Store
	reads atomic.Int64
}

func (c *countingHeadStore) GetLogHead(ctx context.Context, s logs.Stream) (*logs.Head, error) {
	c.reads.Add(1)
	return c.Store.GetLogHead(ctx, s)
}

func TestWriterFirstAttemptWritesOnce(t *testing.T) {
	// A short log of a first attempt is one write: no head read before, no chunk.
	s := newStream("unitTest")
	cs := &countingHeadStore{Store: st}
	w := open(t, &logs.Sink{Store: cs}, s, 1)
	mustWrite(t, w, "Stage: UnitTest status: start\nStage: UnitTest status: finish\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := cs.reads.Load(); n != 0 {
		t.Fatalf("%d head reads", n)
	}
	if h := head(t, s); !h.Closed || h.Lines != 2 || h.Chunks != 0 {
		t.Fatalf("head %+v", h)
	}

	// A first attempt of a stream that has lines all the same (its stage run
	// again after a workflow reset) finds out on its first write and appends.
	again := open(t, &logs.Sink{Store: cs, MaxTailLines: 2}, s, 1)
	mustWrite(t, again, "Stage: UnitTest status: start\nrerun\n")
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if cs.reads.Load() == 0 {
		t.Fatal("the head was not read after the failed compare-and-set")
	}
	equalLines(t, readAll(t, s), []string{
		"Stage: UnitTest status: start", "Stage: UnitTest status: finish", "Stage: UnitTest status: start", "rerun",
	})
}

func waitLen(t *testing.T, r *logs.Reader, s logs.Stream, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := r.Len(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream has %d lines, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lossyStore is the real store whose first writes fail after they were applied,
// the way a connection lost before the reply does.
type lossyStore struct {
	logs.Store
	loseHeads, loseChunks atomic.Int64
}

func (l *lossyStore) PutLogHead(ctx context.Context, h *logs.Head, version int64) error {
	if err := l.Store.PutLogHead(ctx, h, version); err != nil {
		return err
	}
	if l.loseHeads.Add(-1) >= 0 {
		return errors.New("connection reset before the reply")
	}
	return nil
}

func (l *lossyStore) InsertLogChunks(ctx context.Context, cs []*logs.Chunk, replace bool) error {
	if err := l.Store.InsertLogChunks(ctx, cs, replace); err != nil {
		return err
	}
	if l.loseChunks.Add(-1) >= 0 {
		return errors.New("connection reset before the reply")
	}
	return nil
}

func TestWriterNoDuplicateAfterLostReplies(t *testing.T) {
	s := newStream("package")
	ls := &lossyStore{Store: st}
	ls.loseHeads.Store(3)
	ls.loseChunks.Store(2)
	w := open(t, &logs.Sink{Store: ls, FlushDelay: time.Millisecond, MaxTailLines: 3, MaxChunkLines: 4}, s, 1)
	var want []string
	r := &logs.Reader{Store: st}
	for i := range 20 {
		mustWrite(t, w, fmt.Sprintf("l%d\n", i))
		want = append(want, fmt.Sprintf("l%d", i))
		waitLen(t, r, s, int64(i+1)) // a store write per line, however busy the machine
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if ls.loseHeads.Load() >= 0 || ls.loseChunks.Load() >= 0 {
		t.Fatalf("the lossy store lost too few replies: %d %d left", ls.loseHeads.Load(), ls.loseChunks.Load())
	}
	equalLines(t, readAll(t, s), want)
}

func TestWriterBehindAnotherRebases(t *testing.T) {
	// A writer thought dead that still writes, after its successor took over: its
	// stale writes are refused and redone after the successor's lines, so each
	// writer's lines are stored once and in order.
	s := newStream("package")
	sink := &logs.Sink{FlushDelay: time.Millisecond, MaxTailLines: 3, MaxChunkLines: 4}
	r := &logs.Reader{Store: st}
	a := open(t, sink, s, 1)
	mustWrite(t, a, "a0\na1\na2\na3\na4\n")
	waitLen(t, r, s, 5)
	b := open(t, sink, s, 2)
	mustWrite(t, b, "b0\nb1\nb2\nb3\nb4\nb5\n")
	waitLen(t, r, s, 11)
	mustWrite(t, a, "a5\na6\na7\na8\na9\n") // a's head and chunks are stale
	waitLen(t, r, s, 16)
	mustWrite(t, b, "b6\nb7\n")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	equalLines(t, readAll(t, s), []string{
		"a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4", "b5",
		"a5", "a6", "a7", "a8", "a9", "b6", "b7",
	})
}

// downStore is a store that cannot be reached.
type downStore struct{ logs.Store }

func (downStore) PutLogHead(context.Context, *logs.Head, int64) error {
	return errors.New("no reachable servers")
}

func (downStore) InsertLogChunks(context.Context, []*logs.Chunk, bool) error {
	return errors.New("no reachable servers")
}

func TestWriterNeverBlocksOnADeadStore(t *testing.T) {
	s := newStream("package")
	w := open(t, &logs.Sink{Store: downStore{st}, Logger: slog.New(slog.DiscardHandler), RetryFor: 100 * time.Millisecond, MaxPendingBytes: 1000}, s, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 50000 {
			_, _ = fmt.Fprintf(w, "line %d\n", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("writes block while the store is down")
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "not stored") {
		t.Fatalf("close: %v, want the storage error", err)
	}
}

func TestWriterDoesNotBringBackADeletedLog(t *testing.T) {
	s := newStream("unitTest")
	w := open(t, &logs.Sink{FlushDelay: time.Millisecond}, s, 1)
	mustWrite(t, w, "before\n")
	waitLen(t, &logs.Reader{Store: st}, s, 1)
	// The record (here: only its log) is deleted while the stage runs.
	if err := st.DeleteRecord(context.Background(), s.RecordID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete: %v", err)
	}
	mustWrite(t, w, "after\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if h, err := st.GetLogHead(context.Background(), s); err != nil || h != nil {
		t.Fatalf("head after deletion: %+v, %v", h, err)
	}
}

// flakyHeadStore fails the first reads of a head, the way a store that is failing
// over does.
type flakyHeadStore struct {
	logs.Store
	fail atomic.Int64
}

func (f *flakyHeadStore) GetLogHead(ctx context.Context, s logs.Stream) (*logs.Head, error) {
	if f.fail.Add(-1) >= 0 {
		return nil, errors.New("no reachable servers")
	}
	return f.Store.GetLogHead(ctx, s)
}

func TestWriterOpensWithoutWaitingForTheStore(t *testing.T) {
	// The head is read in the background: Open returns at once, and the lines
	// written meanwhile go after those of the earlier attempt, once the store answers.
	s := newStream("unitTest")
	first := open(t, &logs.Sink{}, s, 1)
	mustWrite(t, first, "one\ntwo\n")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	fs := &flakyHeadStore{Store: st}
	fs.fail.Store(2)
	w := open(t, &logs.Sink{Store: fs}, s, 2)
	mustWrite(t, w, "three\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if fs.fail.Load() >= 0 {
		t.Fatal("the head was not read again after the failures")
	}
	equalLines(t, readAll(t, s), []string{"one", "two", "three"})
}

func TestWriterOpenReportsAStoreThatStaysDown(t *testing.T) {
	s := newStream("unitTest")
	fs := &flakyHeadStore{Store: st}
	fs.fail.Store(1 << 40)
	// A retried attempt reads the head before it writes (a first one does not).
	w := open(t, &logs.Sink{Store: fs, Logger: slog.New(slog.DiscardHandler), RetryFor: 100 * time.Millisecond}, s, 2)
	mustWrite(t, w, "lost\n")
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "no reachable servers") {
		t.Fatalf("close: %v, want the storage error", err)
	}
}
