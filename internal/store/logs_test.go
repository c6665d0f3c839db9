package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/store"
)

// TestPutLogHeadCompareAndSet: a head is replaced only from the version it has; of
// writers racing from the same version exactly one wins, and a deleted head is
// not brought back.
func TestPutLogHeadCompareAndSet(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	s := logs.Stream{ProjectID: "p", PipelineID: "pl", RecordID: "r/1", Stage: "unitTest"}
	if err := st.PutLogHead(ctx, &logs.Head{Stream: s, Tail: []string{"a"}, Lines: 1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.PutLogHead(ctx, &logs.Head{Stream: s, Tail: []string{"x"}, Lines: 1}, 0); !errors.Is(err, logs.ErrVersion) {
		t.Fatalf("second create: %v, want ErrVersion", err)
	}
	if err := st.PutLogHead(ctx, &logs.Head{Stream: s, Tail: []string{"a", "b"}, Lines: 2}, 5); !errors.Is(err, logs.ErrVersion) {
		t.Fatalf("replace from a wrong version: %v, want ErrVersion", err)
	}

	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			tail := []string{"a"}
			for range i + 1 {
				tail = append(tail, "b")
			}
			errs[i] = st.PutLogHead(ctx, &logs.Head{Stream: s, Tail: tail, Lines: int64(len(tail))}, 1)
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("writers %d and %d both replaced version 1", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, logs.ErrVersion):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no writer replaced version 1")
	}
	h, err := st.GetLogHead(ctx, s)
	if err != nil || h == nil || h.Lines != int64(won+2) || len(h.Tail) != won+2 {
		t.Fatalf("head %+v (%v), want the winner's %d lines", h, err, won+2)
	}

	if err := st.DeleteRecord(ctx, s.RecordID); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if err := st.PutLogHead(ctx, &logs.Head{Stream: s, Lines: h.Lines + 1, Tail: append(h.Tail, "c")}, h.Lines); !errors.Is(err, logs.ErrVersion) {
		t.Fatalf("replace of a deleted head: %v, want ErrVersion", err)
	}
	if h, err := st.GetLogHead(ctx, s); err != nil || h != nil {
		t.Fatalf("deleted head back: %+v, %v", h, err)
	}
}
