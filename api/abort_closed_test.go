package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// Aborting a record whose workflow was terminated in Temporal (so it never wrote its
// ending, and no reconciler pass has closed it yet) closes the record at once, in the
// status a terminated workflow means, and answers with it.
func TestAbortRecordOfTerminatedWorkflow(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "cut", "x", map[string]any{"unitTest": map[string]any{"command": []string{"sleep 300"}}})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")
	if err := f.env.Temporal.TerminateWorkflow(context.Background(), rec.ID, "", "operator says stop"); err != nil {
		t.Fatal(err)
	}
	if stored := f.get(t, rec.ID); stored.Status != model.StatusRunning {
		t.Fatalf("record after the termination, before the abort: %s, want it still Running", stored.Status)
	}

	r := f.env.Do("PATCH", f.basePath+"/records/"+rec.ID+"/status", map[string]any{"status": "Aborted"})
	wantStatus(t, r, http.StatusOK)
	var answered model.Record
	r.JSON(t, &answered)
	stored := f.get(t, rec.ID)
	for what, got := range map[string]model.Record{"answer": answered, "stored record": stored} {
		var unitTest model.GeneralStageStatus
		if got.StageStatus != nil && got.StageStatus.UnitTest != nil {
			unitTest = *got.StageStatus.UnitTest
		}
		if got.Status != model.StatusAborted || got.EndTime == nil || !strings.Contains(got.ErrorMessage, "terminated") ||
			unitTest.Status != model.StatusAborted {
			t.Errorf("%s: %s %q ended %v, unit test %s; want the record and its stage Aborted, ended, saying the workflow was terminated",
				what, got.Status, got.ErrorMessage, got.EndTime, unitTest.Status)
		}
	}
	// The record closed here is counted as finished, as the reconciler counts those
	// it closes.
	families, body := scrapeMetrics(t, f.env)
	if s := series(families, "cyclone_records_finished_total", map[string]string{"status": model.StatusAborted}); s == nil || s.GetCounter().GetValue() != 1 {
		t.Errorf("cyclone_records_finished_total{status=Aborted}: %v, want 1:\n%s", s, body)
	}
}
