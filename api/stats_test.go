package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// statsEnv holds projects "demo" (pipelines alpha, beta, gamma) and "other" (alpha)
// with records seeded straight into the store at chosen times.
func statsEnv(t *testing.T) *testenv.Env {
	t.Helper()
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	pipelineIDs := map[string]string{} // "project/pipeline" -> ID
	for _, proj := range []string{"demo", "other"} {
		r := env.Do("POST", "/api/v1/projects", projectBody(proj))
		wantStatus(t, r, http.StatusCreated)
		var p model.Project
		r.JSON(t, &p)
		pipelineIDs[proj] = p.ID
		for _, name := range []string{"alpha", "beta", "gamma"} {
			if proj == "other" && name != "alpha" {
				continue
			}
			body := map[string]any{"name": name, "build": map[string]any{
				"builderImage": map[string]any{"image": "golang"},
				"stages": map[string]any{
					"codeCheckout": map[string]any{"codeSources": []any{map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": "https://github.com/a/b"}}}},
					"unitTest":     map[string]any{"command": []string{"go test ./..."}},
				},
			}}
			r := env.Do("POST", "/api/v1/projects/"+proj+"/pipelines", body)
			wantStatus(t, r, http.StatusCreated)
			var pl model.Pipeline
			r.JSON(t, &pl)
			pipelineIDs[proj+"/"+name] = pl.ID
		}
	}
	seeds := []struct{ pipeline, status, start string }{
		{"demo/alpha", model.StatusSuccess, "2024-03-01T01:00:00Z"},
		{"demo/alpha", model.StatusFailed, "2024-03-01T02:00:00Z"},
		{"demo/alpha", model.StatusSuccess, "2024-03-01T23:30:00Z"}, // 2024-03-02 07:30 in Shanghai
		{"demo/alpha", model.StatusAborted, "2024-03-03T10:00:00Z"},
		{"demo/alpha", model.StatusRunning, "2024-03-03T11:00:00Z"},
		{"demo/beta", model.StatusSuccess, "2024-03-01T12:00:00Z"},
		{"demo/beta", model.StatusPending, "2024-03-03T12:00:00Z"},
		{"demo/gamma", model.StatusSuccess, "2024-03-05T12:00:00Z"},
		{"demo/gamma", model.StatusFailed, "2024-03-05T13:00:00Z"},
		{"demo/gamma", model.StatusAborted, "2024-03-05T14:00:00Z"},
		{"other/alpha", model.StatusSuccess, "2024-03-01T12:00:00Z"},
	}
	for i, s := range seeds {
		start, err := time.Parse(time.RFC3339, s.start)
		if err != nil {
			t.Fatal(err)
		}
		proj, _, _ := strings.Cut(s.pipeline, "/")
		rec := &model.Record{ID: fmt.Sprintf("stats-%d", i), ProjectID: pipelineIDs[proj], PipelineID: pipelineIDs[s.pipeline],
			Status: s.status, StartTime: start, Trigger: model.TriggerUser}
		if err := env.Store.CreateRecord(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func unix(s string) int64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.Unix()
}

// rangeQuery is ?startTime=&endTime= for the spec's 00:00:00 of the first day to
// 23:59:59 of the last, in RFC 3339 for legibility.
func rangeQuery(first, last string) string {
	return fmt.Sprintf("?startTime=%d&endTime=%d", unix(first), unix(last))
}

func getStats(t *testing.T, env *testenv.Env, path string) api.PipelineStatusStats {
	t.Helper()
	r := env.Do("GET", path, nil)
	wantStatus(t, r, http.StatusOK)
	var s api.PipelineStatusStats
	r.JSON(t, &s)
	if len(s.Details) == 0 {
		t.Fatalf("no details: %s", r.Body)
	}
	return s
}

type dayCounts struct {
	ts                       string
	success, failed, aborted int64
}

func wantStats(t *testing.T, got api.PipelineStatusStats, total, success, failed, aborted int64, ratio string, days []dayCounts) {
	t.Helper()
	o := got.Overview
	if o.Total != total || o.Success != success || o.Failed != failed || o.Aborted != aborted || o.SuccessRatio != ratio {
		t.Errorf("overview %+v, want total %d success %d failed %d aborted %d ratio %s", o, total, success, failed, aborted, ratio)
	}
	if days == nil {
		return
	}
	var g []dayCounts
	for _, d := range got.Details {
		g = append(g, dayCounts{time.Unix(d.Timestamp, 0).UTC().Format(time.RFC3339), d.Success, d.Failed, d.Aborted})
	}
	if fmt.Sprint(g) != fmt.Sprint(days) {
		t.Errorf("details\n got %v\nwant %v", g, days)
	}
}

func TestStatsCounts(t *testing.T) {
	env := statsEnv(t)
	const demo = "/api/v1/projects/demo"
	march1to3 := rangeQuery("2024-03-01T00:00:00Z", "2024-03-03T23:59:59Z")

	t.Run("exact JSON shape", func(t *testing.T) {
		r := env.Do("GET", demo+"/stats"+march1to3, nil)
		wantStatus(t, r, http.StatusOK)
		want := `{"overview":{"total":7,"success":3,"failed":1,"aborted":1,"successRatio":"42.86%"},"details":[` +
			`{"timestamp":1709251200,"success":3,"failed":1,"aborted":0},` +
			`{"timestamp":1709337600,"success":0,"failed":0,"aborted":0},` +
			`{"timestamp":1709424000,"success":0,"failed":0,"aborted":1}]}`
		if got := strings.TrimSpace(string(r.Body)); got != want {
			t.Fatalf("body\n got %s\nwant %s", got, want)
		}
	})
	t.Run("pipeline scope", func(t *testing.T) {
		wantStats(t, getStats(t, env, demo+"/pipelines/alpha/stats"+march1to3), 5, 2, 1, 1, "40.00%", []dayCounts{
			{"2024-03-01T00:00:00Z", 2, 1, 0},
			{"2024-03-02T00:00:00Z", 0, 0, 0},
			{"2024-03-03T00:00:00Z", 0, 0, 1},
		})
		wantStats(t, getStats(t, env, demo+"/pipelines/beta/stats"+march1to3), 2, 1, 0, 0, "50.00%", nil)
		// The same pipeline name in another project is another pipeline.
		wantStats(t, getStats(t, env, "/api/v1/projects/other/pipelines/alpha/stats"+march1to3), 1, 1, 0, 0, "100.00%", nil)
		wantStats(t, getStats(t, env, "/api/v1/projects/other/stats"+march1to3), 1, 1, 0, 0, "100.00%", nil)
	})
	t.Run("Asia/Shanghai", func(t *testing.T) {
		q := rangeQuery("2024-02-29T16:00:00Z", "2024-03-03T15:59:59Z") + "&tz=Asia/Shanghai"
		// alpha's 23:30 UTC success on the 1st counts on the 2nd in Shanghai.
		wantStats(t, getStats(t, env, demo+"/stats"+q), 7, 3, 1, 1, "42.86%", []dayCounts{
			{"2024-02-29T16:00:00Z", 2, 1, 0},
			{"2024-03-01T16:00:00Z", 1, 0, 0},
			{"2024-03-02T16:00:00Z", 0, 0, 1},
		})
	})
	t.Run("DST change", func(t *testing.T) {
		// New York's 2024-03-10 lasts 23 hours; gamma's records are on the 5th.
		q := rangeQuery("2024-03-09T05:00:00Z", "2024-03-12T03:59:59Z") + "&tz=America/New_York"
		wantStats(t, getStats(t, env, demo+"/stats"+q), 0, 0, 0, 0, "0.00%", []dayCounts{
			{"2024-03-09T05:00:00Z", 0, 0, 0},
			{"2024-03-10T05:00:00Z", 0, 0, 0},
			{"2024-03-11T04:00:00Z", 0, 0, 0},
		})
	})
	t.Run("successRatio", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, ratio string
			total, success    int64
		}{
			{"two of three", demo + "/pipelines/alpha/stats" + rangeQuery("2024-03-01T00:00:00Z", "2024-03-01T23:59:59Z"), "66.67%", 3, 2},
			{"one of three", demo + "/pipelines/gamma/stats" + rangeQuery("2024-03-05T00:00:00Z", "2024-03-05T23:59:59Z"), "33.33%", 3, 1},
			{"none finished", demo + "/pipelines/alpha/stats" + rangeQuery("2024-03-03T00:00:00Z", "2024-03-03T23:59:59Z"), "0.00%", 2, 0},
			{"no records", demo + "/stats" + rangeQuery("2023-03-01T00:00:00Z", "2023-03-01T23:59:59Z"), "0.00%", 0, 0},
			{"one second", demo + "/stats" + rangeQuery("2024-03-01T01:00:00Z", "2024-03-01T01:00:00Z"), "100.00%", 1, 1},
		} {
			s := getStats(t, env, tc.path)
			if s.Overview.SuccessRatio != tc.ratio || s.Overview.Total != tc.total || s.Overview.Success != tc.success {
				t.Errorf("%s: overview %+v, want %d/%d = %s", tc.name, s.Overview, tc.success, tc.total, tc.ratio)
			}
		}
	})
	t.Run("a whole leap year", func(t *testing.T) {
		s := getStats(t, env, demo+"/stats"+rangeQuery("2024-01-01T00:00:00Z", "2024-12-31T23:59:59Z"))
		if len(s.Details) != 366 || s.Overview.Total != 10 {
			t.Fatalf("%d days, total %d", len(s.Details), s.Overview.Total)
		}
		for i := 1; i < len(s.Details); i++ {
			if s.Details[i].Timestamp-s.Details[i-1].Timestamp != 86400 {
				t.Fatalf("day %d at %d after %d", i, s.Details[i].Timestamp, s.Details[i-1].Timestamp)
			}
		}
	})
}

func TestStatsBadInput(t *testing.T) {
	env := statsEnv(t)
	ok := rangeQuery("2024-03-01T00:00:00Z", "2024-03-03T23:59:59Z")
	start, end := unix("2024-03-01T00:00:00Z"), unix("2024-03-03T23:59:59Z")
	cases := []struct {
		name, query string
		status      int
		reason      string
		field       string
	}{
		{"missing startTime", fmt.Sprintf("?endTime=%d", end), 400, api.ReasonInvalidField, "startTime"},
		{"missing endTime", fmt.Sprintf("?startTime=%d", start), 400, api.ReasonInvalidField, "endTime"},
		{"missing both", "", 400, api.ReasonInvalidField, "startTime"},
		{"non-numeric startTime", fmt.Sprintf("?startTime=yesterday&endTime=%d", end), 400, api.ReasonInvalidField, "startTime"},
		{"fractional endTime", fmt.Sprintf("?startTime=%d&endTime=%d.5", start, end), 400, api.ReasonInvalidField, "endTime"},
		{"negative startTime", fmt.Sprintf("?startTime=-1&endTime=%d", end), 400, api.ReasonInvalidField, "startTime"},
		{"milliseconds", fmt.Sprintf("?startTime=%d000&endTime=%d000", start, end), 400, api.ReasonInvalidField, "startTime"},
		{"reversed", fmt.Sprintf("?startTime=%d&endTime=%d", end, start), 400, api.ReasonInvalidField, "endTime"},
		{"unknown tz", ok + "&tz=Mars/Olympus_Mons", 400, api.ReasonInvalidField, "tz"},
		{"server-local tz", ok + "&tz=Local", 400, api.ReasonInvalidField, "tz"},
		{"path as tz", ok + "&tz=../../../etc/passwd", 400, api.ReasonInvalidField, "tz"},
		{"367 days", rangeQuery("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"), 400, api.ReasonInvalidField, "endTime"},
		{"millions of days", fmt.Sprintf("?startTime=0&endTime=%d", end), 400, api.ReasonInvalidField, "endTime"},
	}
	for _, scope := range []string{"/api/v1/projects/demo", "/api/v1/projects/demo/pipelines/alpha"} {
		for _, tc := range cases {
			t.Run(scope+" "+tc.name, func(t *testing.T) {
				wantError(t, env.Do("GET", scope+"/stats"+tc.query, nil), tc.status, tc.reason, tc.field)
			})
		}
	}
	for name, path := range map[string]string{
		"unknown project":             "/api/v1/projects/nope/stats",
		"unknown project of pipeline": "/api/v1/projects/nope/pipelines/alpha/stats",
		"unknown pipeline":            "/api/v1/projects/demo/pipelines/nope/stats",
		"pipeline of another project": "/api/v1/projects/other/pipelines/beta/stats",
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, env.Do("GET", path+ok, nil), http.StatusNotFound, api.ReasonNotFound, "")
		})
	}
}
