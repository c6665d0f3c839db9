package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/model"
)

// BenchmarkOwnCardWrite measures what sheets cost a record's write path: noting a
// record on its pipeline's own card when the pipeline shares a full sheet with
// sheetCapacity-1 others (each card holding recentOnCard records), against the
// baseline of a pipeline alone on its sheet, in the same process, alternating.
//
//	go test -run '^$' -bench BenchmarkOwnCardWrite ./internal/store/
func BenchmarkOwnCardWrite(b *testing.B) {
	s, _ := openCountersStore(b)
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	pipelineWithRecords := func(project string, n int) *model.Pipeline {
		var last *model.Pipeline
		for i := range n {
			last = &model.Pipeline{Name: fmt.Sprintf("p%02d", i), ProjectID: project, Build: &model.Build{}}
			if err := s.CreatePipeline(ctx, last); err != nil {
				b.Fatal(err)
			}
			var recs []*model.Record
			for j := range recentOnCard {
				start := base.Add(time.Duration(j) * time.Minute)
				end := start.Add(time.Minute)
				recs = append(recs, &model.Record{ID: fmt.Sprintf("%s-%d", last.ID, j), ProjectID: project, PipelineID: last.ID,
					Status: model.StatusSuccess, StartTime: start, EndTime: &end, StageStatus: &model.StageStatus{}})
			}
			if err := s.InsertRecords(ctx, recs); err != nil {
				b.Fatal(err)
			}
		}
		return last
	}
	lone, shared := pipelineWithRecords("lone", 1), pipelineWithRecords("shared", sheetCapacity)
	dir, err := s.directory(ctx, "shared")
	if err != nil || len(dir) != sheetCapacity || dir[0].Sheet != dir[sheetCapacity-1].Sheet {
		b.Fatalf("the shared pipelines are not on one sheet: %v (%v)", dir, err)
	}
	note := func(p *model.Pipeline, i int) time.Duration {
		start := base.Add(time.Hour + time.Duration(i)*time.Second)
		r := &model.Record{ID: fmt.Sprintf("%s-new-%d", p.ID, i), ProjectID: p.ProjectID, PipelineID: p.ID,
			Status: model.StatusSuccess, StartTime: start, EndTime: &start, StageStatus: &model.StageStatus{}}
		t := time.Now()
		if err := s.mergeRecent(ctx, p.ProjectID, p.ID, shelves[0], []*model.Record{r}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t)
	}
	var loneTime, sharedTime time.Duration
	i := 0
	for b.Loop() {
		loneTime += note(lone, i)
		sharedTime += note(shared, i)
		i++
	}
	b.ReportMetric(float64(loneTime.Microseconds())/float64(i)/1000, "lone-ms/op")
	b.ReportMetric(float64(sharedTime.Microseconds())/float64(i)/1000, "full-sheet-ms/op")
	b.ReportMetric(float64(sharedTime)/float64(loneTime), "full/lone")
}
