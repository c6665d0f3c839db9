package activities

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
)

func TestScannerProperties(t *testing.T) {
	good := []struct {
		name string
		cfg  model.SonarScanConfig
		want []string
	}{
		{"defaults", model.SonarScanConfig{}, []string{"-Dsonar.sources=.", "-Dsonar.sourceEncoding=UTF-8"}},
		{"all set", model.SonarScanConfig{SourcePath: "./src/main/", EncodingStyle: "ISO-8859-1", Language: "Java"},
			[]string{"-Dsonar.sources=src/main", "-Dsonar.sourceEncoding=ISO-8859-1", "-Dsonar.language=java"}},
		{"language key", model.SonarScanConfig{Language: "JavaScript"}, []string{"-Dsonar.sources=.", "-Dsonar.sourceEncoding=UTF-8", "-Dsonar.language=js"}},
	}
	for _, c := range good {
		got, err := scannerProperties(c.cfg)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	bad := []model.SonarScanConfig{
		{SourcePath: "/etc"},
		{SourcePath: "../other"},
		{SourcePath: "a/../../b"},
		{SourcePath: "src,../x"},
		{EncodingStyle: "UTF-8 -Dsonar.host.url=http://evil"},
		{Language: "java script"},
	}
	for _, cfg := range bad {
		if _, err := scannerProperties(cfg); err == nil || isRetryable(err) {
			t.Errorf("%+v: got %v, want a final stage failure", cfg, err)
		}
	}
}

func TestCETaskID(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "report-task.txt")
	output := []byte("INFO: More about the report processing at http://sonar:9000/api/ce/task?id=AXfromOutput\n")

	// No report file: the scanner's output names the task.
	if id, err := ceTaskID(report, output); err != nil || id != "AXfromOutput" {
		t.Fatalf("from output: %q, %v", id, err)
	}
	if _, err := ceTaskID(report, []byte("INFO: EXECUTION FAILURE\n")); err == nil || isRetryable(err) {
		t.Fatalf("nothing submitted: %v", err)
	}
	// The report file wins.
	if err := os.WriteFile(report, []byte("projectKey=p:q\nserverUrl=http://sonar:9000\nceTaskId=AXfromFile\nceTaskUrl=http://sonar:9000/api/ce/task?id=AXfromFile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := ceTaskID(report, output); err != nil || id != "AXfromFile" {
		t.Fatalf("from file: %q, %v", id, err)
	}
	if err := os.WriteFile(report, []byte("projectKey=p:q\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ceTaskID(report, output); err == nil || !strings.Contains(err.Error(), "no ceTaskId") {
		t.Fatalf("report without a task: %v", err)
	}
}

// A token split across writes is still masked.
func TestMaskWriter(t *testing.T) {
	var out bytes.Buffer
	mw := &maskWriter{w: &out, m: logs.NewMasker([]string{"squ_secret_token"})}
	for _, piece := range []string{"token: squ_se", "cret_tok", "en\nbye squ_secret_", "token"} {
		if n, err := mw.Write([]byte(piece)); err != nil || n != len(piece) {
			t.Fatalf("write %q: %d, %v", piece, n, err)
		}
	}
	mw.flush()
	if got, want := out.String(), "token: "+logs.Mask+"\nbye "+logs.Mask; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
