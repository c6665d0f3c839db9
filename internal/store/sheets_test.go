package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"

	"github.com/cycloneci/cyclone/internal/model"
)

// sheetFor keeps sheets as runs of names while they have room.
func TestSheetFor(t *testing.T) {
	dir := func(sheets ...string) []directoryEntry {
		out := make([]directoryEntry, len(sheets))
		for i, sh := range sheets {
			out[i] = directoryEntry{ID: fmt.Sprintf("p%d", i), Name: fmt.Sprintf("n%02d", i), Sheet: sh}
		}
		return out
	}
	full := slices.Repeat([]string{"F"}, sheetCapacity)
	for _, c := range []struct {
		name string
		dir  []directoryEntry
		at   int
		want string
	}{
		{"first pipeline of a project", nil, 0, "new"},
		{"between two of a sheet", dir("A", "A", "A"), 1, "A"},
		{"between two of a full sheet", dir(full...), 3, "new"},
		{"after the last of a sheet", dir("A", "A", "B"), 2, "A"},
		{"at the end", dir("A", "A"), 2, "A"},
		{"before the first of a sheet", dir("A", "B", "B"), 1, "A"}, // the one before it ends its sheet
		{"before the first of a sheet, the one before full", dir(append(slices.Clone(full), "B")...), sheetCapacity, "B"},
		{"between two in the middle of their sheets", dir("C", "A", "C", "A"), 2, "new"},
		{"at the start", dir("B", "B"), 0, "B"},
	} {
		if got := sheetFor(c.dir, c.at, "new"); got != c.want {
			t.Errorf("%s: sheet %q, want %q", c.name, got, c.want)
		}
	}
}

// assignSheets fills new sheets sheetFill at a time along runs of pipelines without
// one, and leaves the others where they are.
func TestAssignSheets(t *testing.T) {
	dir := make([]directoryEntry, 2*sheetFill+3)
	for i := range dir {
		dir[i] = directoryEntry{ID: fmt.Sprintf("p%d", i)}
	}
	dir[sheetFill+1].Sheet = "kept"
	n := 0
	assignSheets(dir, func() string { n++; return fmt.Sprintf("new%d", n) })
	size := map[string]int{}
	for i, e := range dir {
		size[e.Sheet]++
		if i > 0 && e.Sheet != dir[i-1].Sheet && size[e.Sheet] > 1 {
			t.Fatalf("sheet %s is not a run: %v", e.Sheet, dir)
		}
	}
	if dir[sheetFill+1].Sheet != "kept" || size["kept"] != 1 || size[""] != 0 || len(size) != 5 {
		t.Fatalf("sheets %v, want 4 new ones of at most %d and the kept one", size, sheetFill)
	}
}

// Pipelines created in any order of names each have their card on the sheet their
// directory names, sheets hold at most sheetCapacity, and a page of the list reads a
// few sheets: runs of names share them. Renamed, a pipeline keeps its sheet; deleted,
// its card leaves it, and the last one out deletes the sheet; rebuilt, the
// directories keep the sheets.
func TestSheetsFollowPipelines(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	const n = 200
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("pipe-%03d", i)
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { names[i], names[j] = names[j], names[i] })
	for _, name := range names {
		if err := s.CreatePipeline(ctx, &model.Pipeline{Name: name, ProjectID: "proj", Build: &model.Build{}}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string, maxSheetsPerPage int) []directoryEntry {
		t.Helper()
		dir, err := s.directory(ctx, "proj")
		if err != nil {
			t.Fatal(err)
		}
		cards, err := s.readOwnCards(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		size := map[string]int{}
		for _, e := range dir {
			size[e.Sheet]++
			if c := cards[e.ID]; c == nil || c.Pipeline == nil || c.Pipeline.Name != e.Name {
				t.Fatalf("%s: pipeline %s: card %+v not on its sheet %s", when, e.Name, c, e.Sheet)
			}
		}
		docs, err := s.sheets().CountDocuments(ctx, bson.D{})
		if err != nil || docs != int64(len(size)) {
			t.Fatalf("%s: %d sheet documents (%v), want the %d the directory names", when, docs, err, len(size))
		}
		for sheet, k := range size {
			if sheet == "" || k > sheetCapacity {
				t.Fatalf("%s: sheet %q holds %d pipelines", when, sheet, k)
			}
		}
		for start := 0; start < len(dir); start += 100 {
			page := map[string]bool{}
			for _, e := range dir[start:min(start+100, len(dir))] {
				page[e.Sheet] = true
			}
			if len(page) > maxSheetsPerPage {
				t.Fatalf("%s: the page from %d reads %d sheets, want at most %d", when, start, len(page), maxSheetsPerPage)
			}
		}
		return dir
	}
	// Names in random order leave sheets of about 5 (TestSheetFor's rules); a page
	// of 100 reads about 25 of them instead of 100 cards.
	before := check("created in random order", 40)

	p, err := s.GetPipeline(ctx, "proj", before[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	p.Name = "zzz-renamed"
	if err := s.UpdatePipeline(ctx, "proj", before[0].Name, p); err != nil {
		t.Fatal(err)
	}
	dir := check("renamed", 40)
	if last := dir[len(dir)-1]; last.ID != p.ID || last.Sheet != before[0].Sheet {
		t.Fatalf("the renamed pipeline %+v, want it last on its sheet %s", last, before[0].Sheet)
	}
	// Delete every pipeline of one sheet: the sheet goes with the last.
	gone := before[len(before)/2].Sheet
	for _, e := range before {
		if e.Sheet == gone {
			if err := s.DeletePipeline(ctx, e.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	check("a sheet's pipelines deleted", 40)
	if found, err := s.sheets().CountDocuments(ctx, bson.D{{Key: "_id", Value: gone}}); err != nil || found != 0 {
		t.Fatalf("the emptied sheet %s: %d documents (%v)", gone, found, err)
	}
	// A record noted late, after its pipeline was deleted, brings back neither its
	// card nor its emptied sheet.
	for _, e := range []directoryEntry{before[len(before)/2], before[len(before)/3]} {
		if e.Sheet != gone {
			if err := s.DeletePipeline(ctx, e.ID); err != nil {
				t.Fatal(err)
			}
		}
		late := &model.Record{ID: "late-" + e.ID, ProjectID: "proj", PipelineID: e.ID, Status: model.StatusSuccess,
			StartTime: time.Now(), StageStatus: &model.StageStatus{}}
		if err := s.noteRecent(ctx, late); err != nil {
			t.Fatal(err)
		}
		s.sheetIDs.remember(e.ID, e.Sheet) // as another process still would
		if err := s.noteRecent(ctx, late); err != nil {
			t.Fatal(err)
		}
		if cards, err := s.readOwnCards(ctx, []directoryEntry{e}); err != nil || cards[e.ID] != nil {
			t.Fatalf("a deleted pipeline's card came back: %v (%v)", cards, err)
		}
	}

	dir = check("before the rebuild", 40)
	if err := s.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	if rebuilt := check("rebuilt", 40); !slices.Equal(rebuilt, dir) {
		t.Fatalf("the rebuild moved pipelines between sheets:\n%v\n%v", dir, rebuilt)
	}

	// Names in order (as pipelines made by a script are) fill sheets in runs.
	for i := range 100 {
		if err := s.CreatePipeline(ctx, &model.Pipeline{Name: fmt.Sprintf("seq-%03d", i), ProjectID: "seq", Build: &model.Build{}}); err != nil {
			t.Fatal(err)
		}
	}
	seq, err := s.directory(ctx, "seq")
	if err != nil {
		t.Fatal(err)
	}
	sheets := map[string]bool{}
	for _, e := range seq {
		sheets[e.Sheet] = true
	}
	if want := (100 + sheetCapacity - 1) / sheetCapacity; len(sheets) != want {
		t.Fatalf("100 pipelines created in name order are on %d sheets, want %d", len(sheets), want)
	}

	// A database written before sheets: its rebuild puts every pipeline on one.
	err = changePacked(ctx, s, s.directories(), &directoryLocks, "seq", "seq", func(dc *directoryContent) bool {
		for i := range dc.Pipelines {
			dc.Pipelines[i].Sheet = ""
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.sheets().DeleteMany(ctx, bson.D{{Key: "projectID", Value: "seq"}}); err != nil {
		t.Fatal(err)
	}
	s.sheetIDs.clear()
	if err := s.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	if seq, err = s.directory(ctx, "seq"); err != nil {
		t.Fatal(err)
	}
	cards, err := s.readOwnCards(ctx, seq)
	if err != nil || len(cards) != 100 {
		t.Fatalf("after the rebuild of a directory without sheets: %d cards (%v), want 100", len(cards), err)
	}
	clear(sheets)
	for _, e := range seq {
		sheets[e.Sheet] = true
	}
	if want := (100 + sheetFill - 1) / sheetFill; len(sheets) != want {
		t.Fatalf("the rebuild put 100 pipelines on %d sheets, want %d", len(sheets), want)
	}
}

// A sheet read again unchanged is not unpacked again, yet each reader gets its own
// pipeline to change (the API redacts it); a sheet changed since is unpacked anew.
func TestSheetMemo(t *testing.T) {
	s, _ := openCountersStore(t)
	ctx := context.Background()
	p := &model.Pipeline{Name: "memo", ProjectID: "proj", Build: &model.Build{}}
	if err := s.CreatePipeline(ctx, p); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	record := func(id string) *model.Record {
		end := start.Add(time.Minute)
		start = end
		return &model.Record{ID: id, ProjectID: "proj", PipelineID: p.ID, Status: model.StatusSuccess,
			StartTime: end, EndTime: &end, StageStatus: &model.StageStatus{}}
	}
	if err := s.InsertRecords(ctx, []*model.Record{record("r1")}); err != nil {
		t.Fatal(err)
	}
	read := func() *cardContent {
		t.Helper()
		dir, err := s.directory(ctx, "proj")
		if err != nil {
			t.Fatal(err)
		}
		cards, err := s.readOwnCards(ctx, dir)
		if err != nil || cards[p.ID] == nil || cards[p.ID].Pipeline == nil {
			t.Fatalf("the card: %v (%v)", cards, err)
		}
		return cards[p.ID]
	}
	first := read()
	first.Pipeline.Name = "changed by a reader"
	second := read()
	if second.Pipeline.Name != "memo" || second.Pipeline == first.Pipeline {
		t.Fatalf("a reader's change of its pipeline reached the next reader: %q", second.Pipeline.Name)
	}
	if len(second.Records) != 1 || second.Records[0] != first.Records[0] {
		t.Fatalf("the unchanged sheet was unpacked again: records %v and %v", first.Records, second.Records)
	}
	if err := s.InsertRecords(ctx, []*model.Record{record("r2")}); err != nil {
		t.Fatal(err)
	}
	if third := read(); len(third.Records) != 2 || third.Records[0].ID != "r2" {
		t.Fatalf("after a change of the sheet: records %v, want r2 and r1", third.Records)
	}
}

// The MongoDB way (a compare-and-set on each sheet's version, $in reads) keeps the
// same sheets: every card on its sheet, and the sheets gone with their pipelines.
func TestSheetsTheMongoDBWay(t *testing.T) {
	_, s := openCountersStore(t)
	ctx := context.Background()
	var ids []string
	for i := range 2*sheetCapacity + 1 {
		p := &model.Pipeline{Name: fmt.Sprintf("m%02d", i), ProjectID: "m", Build: &model.Build{}}
		if err := s.CreatePipeline(ctx, p); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	dir, err := s.directory(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}
	cards, err := s.readOwnCards(ctx, dir)
	if err != nil || len(cards) != len(ids) {
		t.Fatalf("%d cards (%v), want %d", len(cards), err, len(ids))
	}
	if n, err := s.sheets().CountDocuments(ctx, bson.D{{Key: "projectID", Value: "m"}}); err != nil || n != 3 {
		t.Fatalf("%d sheets (%v), want 3", n, err)
	}
	for _, id := range ids {
		if err := s.DeletePipeline(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.sheets().CountDocuments(ctx, bson.D{{Key: "projectID", Value: "m"}}); err != nil || n != 0 {
		t.Fatalf("%d sheets left (%v), want none", n, err)
	}
}
