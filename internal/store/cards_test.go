package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// checkRecentAnswers checks that the pipeline list's recent records (from the
// pipelines' cards up to 10 records, from the records beyond) are exactly what
// RecentRecords reads from the records, record by record and field by field.
func checkRecentAnswers(t *testing.T, st *store.Store, pipelineIDs []string, when string) {
	t.Helper()
	ctx := context.Background()
	for _, n := range []int64{1, 3, 10, 11} {
		for _, rc := range []store.RecentCounts{{All: n}, {Success: n, Failed: n}, {All: n, Success: 2, Failed: 12}} {
			listed, _, err := st.ListPipelinesRecent(ctx, "proj", store.ListOptions{}, rc)
			if err != nil {
				t.Fatal(err)
			}
			if len(listed) != len(pipelineIDs) {
				t.Fatalf("%s: %d pipelines listed, want %d", when, len(listed), len(pipelineIDs))
			}
			for _, lp := range listed {
				for status, n := range map[string]int64{"": rc.All, model.StatusSuccess: rc.Success, model.StatusFailed: rc.Failed} {
					var want []*model.Record
					if n > 0 {
						if want, err = st.RecentRecords(ctx, lp.ID, status, n); err != nil {
							t.Fatal(err)
						}
					}
					g, _ := json.Marshal(*lp.RecentOf(status))
					w, _ := json.Marshal(want)
					if len(want) == 0 {
						w = []byte("null")
					}
					if string(g) != string(w) {
						t.Fatalf("%s: pipeline %s, status %q, n %d:\n got %s\nwant %s", when, lp.Name, status, n, g, w)
					}
				}
			}
		}
	}
}

// The pipelines' cards follow every change of the records: creation in any
// order of start times, running (renamed), finishing, deletion and rotation, and a
// rebuild from the records gives the same answers.
func TestRecentSummariesFollowRecords(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	// The same data read the MongoDB way (unfinished records read after the
	// cards, with one query) answers the same.
	mongoWay := openMongoWay(t, uri)
	rng := rand.New(rand.NewPCG(3, 4))
	var pipelineIDs []string
	for _, name := range []string{"a", "b", "c"} {
		p := &model.Pipeline{Name: name, ProjectID: "proj", Build: &model.Build{}}
		if err := st.CreatePipeline(ctx, p); err != nil {
			t.Fatal(err)
		}
		pipelineIDs = append(pipelineIDs, p.ID)
	}
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var live []*model.Record
	finished := []string{model.StatusSuccess, model.StatusFailed, model.StatusAborted}
	for round := range 6 {
		for i := range 12 {
			r := &model.Record{ID: fmt.Sprintf("r%d-%02d", round, i), PipelineID: pipelineIDs[rng.IntN(2)], ProjectID: "proj",
				Status: model.StatusPending, StageStatus: &model.StageStatus{},
				StartTime: base.Add(time.Duration(rng.IntN(600)) * time.Minute)}
			if err := st.CreateRecord(ctx, r); err != nil {
				t.Fatal(err)
			}
			live = append(live, r)
		}
		rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		var still []*model.Record
		for i, r := range live {
			switch i % 4 {
			case 0:
				if err := st.SetRecordRunning(ctx, r.ID, "run", fmt.Sprintf("name-%s", r.ID)); err != nil {
					t.Fatal(err)
				}
				still = append(still, r)
			case 1:
				still = append(still, r)
			default:
				status := finished[rng.IntN(len(finished))]
				if err := st.FinishRecord(ctx, r.ID, status, "", r.StartTime.Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
		}
		live = still
		checkRecentAnswers(t, st, pipelineIDs, fmt.Sprintf("round %d", round))
		checkRecentAnswers(t, mongoWay, pipelineIDs, fmt.Sprintf("round %d, the MongoDB way", round))

		// Delete some of the newest finished records: their cards fill up again.
		newest, err := st.RecentRecords(ctx, pipelineIDs[round%2], "", 4)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range newest {
			if model.IsTerminal(r.Status) {
				if err := st.DeleteRecord(ctx, r.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
		checkRecentAnswers(t, st, pipelineIDs, fmt.Sprintf("round %d, after deleting", round))
	}
	if _, err := st.RotateRecords(ctx, 8); err != nil {
		t.Fatal(err)
	}
	checkRecentAnswers(t, st, pipelineIDs, "after rotation")
	// A finish retried after it was done changes nothing.
	done, err := st.RecentRecords(ctx, pipelineIDs[0], model.StatusSuccess, 1)
	if err != nil || len(done) != 1 {
		t.Fatalf("a finished record: %v %v", done, err)
	}
	if err := st.FinishRecord(ctx, done[0].ID, model.StatusFailed, "late", time.Now()); err != nil {
		t.Fatal(err)
	}
	checkRecentAnswers(t, st, pipelineIDs, "after a retried finish")
	if err := st.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	checkRecentAnswers(t, st, pipelineIDs, "after a rebuild")

	if err := st.DeletePipeline(ctx, pipelineIDs[0]); err != nil {
		t.Fatal(err)
	}
	checkRecentAnswers(t, st, pipelineIDs[1:], "after deleting pipeline a")
	p, err := st.GetPipelineByID(ctx, pipelineIDs[1])
	if err != nil {
		t.Fatal(err)
	}
	p.Description = "changed"
	if err := st.UpdatePipeline(ctx, "proj", p.Name, p); err != nil {
		t.Fatal(err)
	}
	listed, _, err := st.ListPipelinesRecent(ctx, "proj", store.ListOptions{Limit: 1}, store.RecentCounts{})
	if err != nil || len(listed) != 1 || listed[0].Description != "changed" {
		t.Fatalf("the list shows the pipeline as updated: %+v %v", listed, err)
	}
}

// The pipeline list read through the project's directory pages by name like the
// filtered query, follows creation, renaming and deletion, and survives a rebuild.
func TestPipelineDirectory(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	var names []string
	for i := range 23 {
		name := fmt.Sprintf("p%03d", rng.IntN(1000)*100+i)
		names = append(names, name)
		if err := st.CreatePipeline(ctx, &model.Pipeline{Name: name, ProjectID: "x", Build: &model.Build{}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreatePipeline(ctx, &model.Pipeline{Name: "elsewhere", ProjectID: "y", Build: &model.Build{}}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		want := slices.Sorted(slices.Values(names))
		for _, page := range []store.ListOptions{{}, {Start: 0, Limit: 5}, {Start: 20, Limit: 5}, {Start: 30, Limit: 5}} {
			got, total, err := st.ListPipelines(ctx, "x", page)
			if err != nil {
				t.Fatal(err)
			}
			end := int64(len(want))
			if page.Limit > 0 {
				end = min(end, page.Start+page.Limit)
			}
			var gotNames []string
			for _, p := range got {
				gotNames = append(gotNames, p.Name)
			}
			if wantPage := want[min(page.Start, int64(len(want))):end]; total != int64(len(want)) || !slices.Equal(gotNames, wantPage) {
				t.Fatalf("%s: page %+v: %v of %d, want %v of %d", when, page, gotNames, total, wantPage, len(want))
			}
		}
		one, total, err := st.ListPipelines(ctx, "x", store.ListOptions{Filter: map[string]string{"name": want[0]}})
		if err != nil || total != 1 || len(one) != 1 || one[0].Name != want[0] {
			t.Fatalf("%s: filtered by name: %v %d %v", when, one, total, err)
		}
	}
	check("created")

	p, err := st.GetPipeline(ctx, "x", names[3])
	if err != nil {
		t.Fatal(err)
	}
	p.Name = "a-first"
	if err := st.UpdatePipeline(ctx, "x", names[3], p); err != nil {
		t.Fatal(err)
	}
	names[3] = "a-first"
	gone, err := st.GetPipeline(ctx, "x", names[7])
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePipeline(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	names = slices.Delete(names, 7, 8)
	check("renamed and deleted")
	if err := st.RebuildDerived(ctx); err != nil {
		t.Fatal(err)
	}
	check("rebuilt")

	if err := st.DeleteProject(ctx, "x"); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if got, total, err := st.ListPipelines(ctx, "x", store.ListOptions{}); err != nil || total != 0 || len(got) != 0 {
		t.Fatalf("pipelines of a deleted project: %v %d %v", got, total, err)
	}
	if got, total, _ := st.ListPipelines(ctx, "y", store.ListOptions{}); total != 1 || len(got) != 1 {
		t.Fatalf("the other project's pipelines: %v %d", got, total)
	}
}

// Every collection the store's code names exists right after Open (so the embedded
// store's _id-lookup indexes, added after Open, cover them all).
func TestOpenCreatesEveryCollection(t *testing.T) {
	_, uri := startStore(t)
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	have, err := c.Database("cyclone").ListCollectionNames(context.Background(), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.go")
	named := regexp.MustCompile(`Collection\("([A-Za-z]+)"\)`)
	seen := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range named.FindAllStringSubmatch(string(src), -1) {
			seen++
			if !slices.Contains(have, m[1]) {
				t.Errorf("%s uses collection %q, which Open did not create (have %v)", f, m[1], have)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("found only %d collection names in the sources", seen)
	}
}

// Records of one pipeline created and finished at the same time all reach its
// cards: FerretDB's updates of one document are serialised (see stripedLocks).
func TestRecentCardsUnderConcurrentWrites(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	p := &model.Pipeline{Name: "busy", ProjectID: "proj", Build: &model.Build{}}
	if err := st.CreatePipeline(ctx, p); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	errs := make(chan error, 24)
	for i := range 24 {
		go func() {
			r := &model.Record{ID: fmt.Sprintf("c-%02d", i), PipelineID: p.ID, ProjectID: "proj", Status: model.StatusPending,
				StageStatus: &model.StageStatus{}, StartTime: base.Add(time.Duration(i) * time.Minute)}
			err := st.CreateRecord(ctx, r)
			if err == nil {
				status := []string{model.StatusSuccess, model.StatusFailed}[i%2]
				err = st.FinishRecord(ctx, r.ID, status, "", r.StartTime.Add(time.Second))
			}
			errs <- err
		}()
	}
	for range 24 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	checkRecentAnswers(t, st, []string{p.ID}, "after concurrent writes")
}

// TestListedPipelineShowsItsWebhook: the webhook the server registers for a pipeline
// (written apart from the pipeline) shows in the pipeline list, which reads cards,
// as in a GET of the pipeline; and is gone from both once cleared.
func TestListedPipelineShowsItsWebhook(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	p := &model.Pipeline{Name: "hooked", ProjectID: "x", Build: &model.Build{}}
	if err := st.CreatePipeline(ctx, p); err != nil {
		t.Fatal(err)
	}
	listed := func() *model.Pipeline {
		t.Helper()
		got, _, err := st.ListPipelines(ctx, "x", store.ListOptions{})
		if err != nil || len(got) != 1 {
			t.Fatalf("list: %v, %v", got, err)
		}
		return got[0]
	}
	hook := &model.PipelineWebhook{ID: "42", URL: "https://ci.example.com/api/v1/pipelines/" + p.ID + "/githubwebhook"}
	if err := st.SetPipelineWebhook(ctx, p.ID, hook); err != nil {
		t.Fatal(err)
	}
	if got := listed().Webhook; got == nil || got.ID != hook.ID || got.URL != hook.URL {
		t.Fatalf("listed webhook %+v, want %+v", got, hook)
	}
	if err := st.SetPipelineWebhook(ctx, p.ID, nil); err != nil {
		t.Fatal(err)
	}
	if got := listed().Webhook; got != nil {
		t.Fatalf("listed webhook %+v after it was cleared", got)
	}
}
