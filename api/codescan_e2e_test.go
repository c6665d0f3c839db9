package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/sonar"
	"github.com/cycloneci/cyclone/internal/sonar/sonartest"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/internal/testimage"
)

// fakeScanner stands in for sonar-scanner (whose image cannot be pulled here): it
// shows what it was given, checks it runs in the checked-out workspace, and writes
// the report file the real scanner leaves, naming a task per project key. It posts
// nothing: the test's SonarQube is told about the task beforehand.
const fakeScanner = `#!/bin/sh
set -e
key=
for a in "$@"; do
  case "$a" in -Dsonar.projectKey=*) key="${a#-Dsonar.projectKey=}";; esac
done
echo "scanner args: $*"
echo "token seen: $SONAR_TOKEN"
test -f README.md
case "$key" in *broken*) echo "ERROR: Error during SonarScanner execution" >&2; exit 2;; esac
mkdir -p .scannerwork
printf 'projectKey=%s\nserverUrl=%s\nceTaskId=task-%s\n' "$key" "$SONAR_HOST_URL" "$key" > .scannerwork/report-task.txt
echo "INFO: ANALYSIS SUCCESSFUL"
`

// The codeScan stage end to end: a scanner container over the checked-out
// workspace, SonarQube's task waited for, measures and the gate read back.
func TestCodeScanSonarQube(t *testing.T) {
	cli := testimage.RequireDocker(t)
	scanner := testimage.Derived(t, cli, fmt.Sprintf("cyclone-test/sonar-scanner:%d", time.Now().UnixNano()),
		map[string]string{"/bin/sonar-scanner": fakeScanner})
	f := newFixture(t, testenv.Options{Executor: docker.New(cli, t.TempDir()), SonarScannerImage: scanner})
	srv := sonartest.Start(t, sonarToken)
	wantStatus(t, f.env.Do("POST", "/api/v1/integrations", sonarBody("sonar1", srv.URL, sonarToken)), http.StatusCreated)

	scanStages := func(integration, threshold string, allowFailure bool) map[string]any {
		return map[string]any{"codeScan": map[string]any{"allowFailure": allowFailure, "sonarqube": map[string]any{
			"name": integration, "config": map[string]any{"sourcePath": "./", "encodingStyle": "UTF-8", "language": "Go", "threshold": threshold}}}}
	}
	run := func(t *testing.T, pipeline string) model.Record {
		t.Helper()
		f.basePath = "/api/v1/projects/demo/pipelines/" + pipeline
		rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
		// The token never travels through Temporal.
		iter := f.env.Temporal.GetWorkflowHistory(context.Background(), rec.ID, "", false, 0)
		for iter.HasNext() {
			ev, err := iter.Next()
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(ev.String(), sonarToken) {
				t.Fatalf("workflow history event %s holds the SonarQube token", ev.EventType)
			}
		}
		return rec
	}
	stageLog := func(t *testing.T, rec model.Record) string {
		t.Helper()
		r := f.env.Do("GET", f.basePath+"/records/"+rec.ID+"/logs?stage=codeScan", nil)
		wantStatus(t, r, http.StatusOK)
		if strings.Contains(string(r.Body), sonarToken) {
			t.Fatalf("the SonarQube token is in the log:\n%s", r.Body)
		}
		return string(r.Body)
	}
	wantMeasures := func(t *testing.T, cs *model.CodeScanStatus, key string) {
		t.Helper()
		if cs == nil || cs.SonarQube == nil || len(cs.SonarQube.Measures) != len(sonar.Metrics) ||
			cs.SonarQube.OverviewLink != srv.URL+"/dashboard?id="+strings.ReplaceAll(key, ":", "%3A") {
			t.Fatalf("codeScan status %+v", cs)
		}
		for i, m := range cs.SonarQube.Measures {
			if m.Metric != sonar.Metrics[i] || m.Value == "" {
				t.Fatalf("measures %+v", cs.SonarQube.Measures)
			}
		}
	}

	t.Run("gate OK", func(t *testing.T) {
		f.pipeline(t, "scan-ok", testimage.BusyboxImage, scanStages("sonar1", "", false))
		key := sonar.ProjectKey("demo", "scan-ok")
		srv.AddTask("task-"+key, key, sonar.TaskPending, sonar.TaskInProgress, sonar.TaskSuccess)
		rec := run(t, "scan-ok")
		log := stageLog(t, rec)
		if rec.Status != model.StatusSuccess || rec.StageStatus.CodeScan.Status != model.StatusSuccess {
			t.Fatalf("record %s %q, codeScan %+v\n%s", rec.Status, rec.ErrorMessage, rec.StageStatus.CodeScan, log)
		}
		wantMeasures(t, rec.StageStatus.CodeScan, key)
		for _, want := range []string{
			"-Dsonar.projectKey=" + key, "-Dsonar.host.url=" + srv.URL, "-Dsonar.sources=.", "-Dsonar.sourceEncoding=UTF-8", "-Dsonar.language=go",
			"token seen: ********", "SonarQube task task-" + key + ": PENDING", ": IN_PROGRESS", ": SUCCESS", "Quality gate: OK", "coverage: 81.5",
		} {
			if !strings.Contains(log, want) {
				t.Fatalf("log lacks %q:\n%s", want, log)
			}
		}
		if !srv.HasProject(key) {
			t.Fatal("the SonarQube project was not created")
		}
	})

	t.Run("gate ERROR fails the stage", func(t *testing.T) {
		f.pipeline(t, "scan-strict", testimage.BusyboxImage, scanStages("sonar1", "strict", false))
		key := sonar.ProjectKey("demo", "scan-strict")
		srv.AddTask("task-"+key, key, sonar.TaskInProgress, sonar.TaskSuccess)
		rec := run(t, "scan-strict")
		cs := rec.StageStatus.CodeScan
		if rec.Status != model.StatusFailed || cs.Status != model.StatusFailed || !strings.Contains(cs.ErrorMessage, "quality gate failed") {
			t.Fatalf("record %s %q, codeScan %+v\n%s", rec.Status, rec.ErrorMessage, cs, stageLog(t, rec))
		}
		wantMeasures(t, cs, key) // the results are kept for a failed gate too
		if srv.ProjectGate(key) != "strict" {
			t.Fatalf("quality gate selected: %q", srv.ProjectGate(key))
		}
	})

	t.Run("gate ERROR allowed to fail", func(t *testing.T) {
		f.pipeline(t, "scan-allowed", testimage.BusyboxImage, scanStages("sonar1", "strict", true))
		key := sonar.ProjectKey("demo", "scan-allowed")
		srv.AddTask("task-"+key, key, sonar.TaskSuccess)
		rec := run(t, "scan-allowed")
		if rec.Status != model.StatusSuccess || rec.StageStatus.CodeScan.Status != model.StatusFailed {
			t.Fatalf("record %s %q, codeScan %+v", rec.Status, rec.ErrorMessage, rec.StageStatus.CodeScan)
		}
	})

	t.Run("analysis failed on SonarQube", func(t *testing.T) {
		f.pipeline(t, "scan-cefail", testimage.BusyboxImage, scanStages("sonar1", "", false))
		key := sonar.ProjectKey("demo", "scan-cefail")
		srv.AddTask("task-"+key, key, sonar.TaskPending, sonar.TaskFailed)
		rec := run(t, "scan-cefail")
		if cs := rec.StageStatus.CodeScan; rec.Status != model.StatusFailed || !strings.Contains(cs.ErrorMessage, "Unsupported language") {
			t.Fatalf("record %s %q, codeScan %+v", rec.Status, rec.ErrorMessage, cs)
		}
	})

	t.Run("scanner fails", func(t *testing.T) {
		f.pipeline(t, "scan-broken", testimage.BusyboxImage, scanStages("sonar1", "", false))
		rec := run(t, "scan-broken")
		cs := rec.StageStatus.CodeScan
		if rec.Status != model.StatusFailed || !strings.Contains(cs.ErrorMessage, "sonar-scanner failed") {
			t.Fatalf("record %s %q, codeScan %+v", rec.Status, rec.ErrorMessage, cs)
		}
		if log := stageLog(t, rec); !strings.Contains(log, "Error during SonarScanner execution") {
			t.Fatalf("log lacks the scanner's error:\n%s", log)
		}
	})

	t.Run("unknown quality gate", func(t *testing.T) {
		f.pipeline(t, "scan-nogate", testimage.BusyboxImage, scanStages("sonar1", "no such gate", false))
		rec := run(t, "scan-nogate")
		if cs := rec.StageStatus.CodeScan; rec.Status != model.StatusFailed || !strings.Contains(cs.ErrorMessage, `no quality gate named "no such gate"`) {
			t.Fatalf("record %s %q, codeScan %+v", rec.Status, rec.ErrorMessage, cs)
		}
	})

	t.Run("SonarQube unreachable", func(t *testing.T) {
		down := sonartest.Start(t, sonarToken)
		wantStatus(t, f.env.Do("POST", "/api/v1/integrations", sonarBody("sonar-down", down.URL, sonarToken)), http.StatusCreated)
		f.pipeline(t, "scan-down", testimage.BusyboxImage, scanStages("sonar-down", "", false))
		down.Close()
		rec := run(t, "scan-down")
		cs := rec.StageStatus.CodeScan
		if rec.Status != model.StatusFailed || !strings.Contains(cs.ErrorMessage, "SonarQube could not be reached") || strings.Contains(cs.ErrorMessage, sonarToken) {
			t.Fatalf("record %s %q, codeScan %+v", rec.Status, rec.ErrorMessage, cs)
		}
		// The scanner's container and the record's network go whatever the outcome.
		(&imgFixture{fixture: f, cli: cli}).noLeftovers(t, rec.ID)
	})
}
