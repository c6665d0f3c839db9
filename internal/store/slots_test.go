package store_test

import (
	"context"
	"testing"
	"time"
)

// TestSlotOrder: a cloud's queue is in the order the records were made, whatever
// the order they asked for a place; a second ask keeps the place; clouds are apart.
func TestSlotOrder(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	asks := []struct {
		id, cloud string
		created   time.Time
	}{
		{"third", "a", t0.Add(2 * time.Second)},
		{"first", "a", t0},
		{"other-cloud", "b", t0.Add(-time.Hour)},
		{"second-tie-1", "a", t0.Add(time.Second)},
		{"second-tie-2", "a", t0.Add(time.Second)},
	}
	for _, a := range asks {
		if _, err := st.EnqueueSlot(ctx, a.id, a.cloud, a.created); err != nil {
			t.Fatal(err)
		}
	}
	again, err := st.EnqueueSlot(ctx, "third", "a", t0.Add(-24*time.Hour))
	if err != nil || !again.Created.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("asking again moved the place: %+v %v", again, err)
	}
	ahead, n, err := st.SlotsAhead(ctx, again, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(ahead) != 2 || ahead[0].RecordID != "first" || ahead[1].RecordID != "second-tie-1" {
		t.Fatalf("ahead of third: %d %+v", n, ahead)
	}
	tie2, _ := st.EnqueueSlot(ctx, "second-tie-2", "a", t0)
	if _, n, err := st.SlotsAhead(ctx, tie2, 0); err != nil || n != 2 {
		t.Fatalf("ahead of the second of a tie: %d %v", n, err)
	}
	first, _ := st.EnqueueSlot(ctx, "first", "a", t0)
	if _, n, err := st.SlotsAhead(ctx, first, 0); err != nil || n != 0 {
		t.Fatalf("ahead of the first: %d %v", n, err)
	}
	if err := st.ReleaseSlot(ctx, "first"); err != nil {
		t.Fatal(err)
	}
	if _, n, err := st.SlotsAhead(ctx, again, 0); err != nil || n != 2 {
		t.Fatalf("ahead of third after the first left: %d %v", n, err)
	}
}
