package logs_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/logs"
)

func copyFrom(t *testing.T, r *logs.Reader, s logs.Stream, from int64) []string {
	t.Helper()
	var got []string
	next, err := r.Copy(context.Background(), s, from, func(l []string) error { got = append(got, l...); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := from + int64(len(got)); len(got) > 0 && next != want {
		t.Fatalf("from %d: next %d, want %d", from, next, want)
	}
	return got
}

func TestReaderCopyFromEveryOffset(t *testing.T) {
	s := newStream("unitTest")
	w := open(t, &logs.Sink{MaxChunkLines: 7, MaxTailLines: 5, FlushDelay: time.Millisecond}, s, 1)
	var want []string
	for i := range 53 {
		mustWrite(t, w, fmt.Sprintf("line %d\n", i))
		want = append(want, fmt.Sprintf("line %d", i))
		if i%9 == 0 {
			time.Sleep(5 * time.Millisecond) // some flushes go to the head's tail only
		}
	}
	r := &logs.Reader{Store: st}
	waitLen(t, r, s, 53)
	check := func(when string) {
		for from := 0; from <= 60; from++ {
			equalLines(t, copyFrom(t, r, s, int64(from)), want[min(from, len(want)):])
		}
	}
	if h := head(t, s); h.Chunks == 0 || len(h.Tail) == 0 {
		t.Fatalf("want lines both sealed and in the tail: %+v", h)
	}
	check("while written")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	check("closed")
	if n, err := r.Len(context.Background(), s); err != nil || n != 53 {
		t.Fatalf("len %d, %v", n, err)
	}
	if n, err := r.Len(context.Background(), newStream("package")); err != nil || n != 0 {
		t.Fatalf("len of an empty stream %d, %v", n, err)
	}
}

// follow runs Follow in the background and returns what it emitted when it ends.
func follow(t *testing.T, r *logs.Reader, s logs.Stream, from int64, done func() bool) (<-chan []string, *atomic.Int64) {
	t.Helper()
	out := make(chan []string, 1)
	var count atomic.Int64
	go func() {
		var got []string
		_, err := r.Follow(context.Background(), s, from, func(context.Context) (bool, error) { return done(), nil },
			func(l []string) error {
				got = append(got, l...)
				count.Add(int64(len(l)))
				return nil
			})
		if err != nil {
			t.Error(err)
		}
		out <- got
	}()
	return out, &count
}

func TestReaderFollowsALiveStream(t *testing.T) {
	s := newStream("unitTest")
	var finished atomic.Bool
	r := &logs.Reader{Store: st, PollInterval: 10 * time.Millisecond, DoneInterval: 20 * time.Millisecond}
	out, count := follow(t, r, s, 0, finished.Load)

	w := open(t, &logs.Sink{MaxChunkLines: 5, FlushDelay: 5 * time.Millisecond}, s, 1)
	var want []string
	for i := range 23 {
		mustWrite(t, w, fmt.Sprintf("live %d\n", i))
		want = append(want, fmt.Sprintf("live %d", i))
		if i == 2 {
			// Lines reach the follower while the writer is still going.
			deadline := time.Now().Add(5 * time.Second)
			for count.Load() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("follower has %d lines a while after 3 were written", count.Load())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	finished.Store(true)
	select {
	case got := <-out:
		equalLines(t, got, want)
	case <-time.After(10 * time.Second):
		t.Fatal("follower did not stop after the stream was done")
	}

	// Resuming at an offset gives the rest: no duplicate, no gap.
	out, _ = follow(t, r, s, 17, finished.Load)
	equalLines(t, <-out, want[17:])
}

func TestReaderFollowsPastADeadAttempt(t *testing.T) {
	s := newStream("unitTest")
	// Attempt 1 stores two lines and dies.
	dead := open(t, &logs.Sink{FlushDelay: time.Millisecond}, s, 1)
	mustWrite(t, dead, "a1\na2\n")
	r := &logs.Reader{Store: st, PollInterval: 10 * time.Millisecond}
	waitLen(t, r, s, 2)

	var finished atomic.Bool
	out, count := follow(t, r, s, 1, finished.Load)
	w := open(t, &logs.Sink{}, s, 2)
	mustWrite(t, w, "Stage: UnitTest attempt 2\nb1\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The follower gets the new attempt's lines before the stage is done.
	deadline := time.Now().Add(5 * time.Second)
	for count.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("follower stuck after the dead attempt with %d lines", count.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	finished.Store(true)
	equalLines(t, <-out, []string{"a2", "Stage: UnitTest attempt 2", "b1"})
}

func TestReaderHubWakesFollowers(t *testing.T) {
	s := newStream("package")
	hub := logs.NewHub()
	var finished atomic.Bool
	// Polling alone would take ten seconds.
	r := &logs.Reader{Store: st, Hub: hub, PollInterval: 10 * time.Second, DoneInterval: time.Millisecond}
	out, count := follow(t, r, s, 0, finished.Load)
	time.Sleep(50 * time.Millisecond) // the follower is idle, waiting
	w := open(t, &logs.Sink{Hub: hub, FlushDelay: time.Millisecond}, s, 1)
	start := time.Now()
	mustWrite(t, w, "fast\n")
	for count.Load() < 1 {
		if time.Since(start) > 3*time.Second {
			t.Fatal("the hub did not wake the follower")
		}
		time.Sleep(time.Millisecond)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	finished.Store(true)
	hub.Notify(s)
	equalLines(t, <-out, []string{"fast"})
}
