package activities

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/sonar"
	"github.com/cycloneci/cyclone/internal/store"
)

// DefaultSonarScannerImage is the image the codeScan stage runs sonar-scanner in.
const DefaultSonarScannerImage = "sonarsource/sonar-scanner-cli"

// reportTaskFile is where sonar-scanner writes what it submitted (ceTaskId=...),
// relative to the project's base directory (the workspace).
const reportTaskFile = ".scannerwork/report-task.txt"

// IntegrationSecrets opens the integrations pipelines name.
type IntegrationSecrets interface {
	IntegrationSecret(ctx context.Context, name string) (*store.IntegrationSecret, error)
}

// SonarScan configures the codeScan stage's SonarQube scan.
type SonarScan struct {
	// Image is the scanner's image (default DefaultSonarScannerImage).
	Image string
	// Command starts the scanner in Image (default ["sonar-scanner"]); the stage
	// appends its -D properties.
	Command []string
	// Integrations opens the SonarQube server and token a pipeline names; nil: the
	// stage fails saying SonarQube is not configured on this worker.
	Integrations IntegrationSecrets
	// PollInterval is the first wait between two reads of SonarQube's analysis task
	// (default 500ms, doubling up to 5s); PollTimeout bounds the wait (default 30m,
	// and never past the stage's timeout).
	PollInterval time.Duration
	PollTimeout  time.Duration
}

// scanFailed is the codeScan stage's final failure, with a message for the user.
func scanFailed(format string, args ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, args...), ErrTypeStepFailed, nil)
}

// sonarFailure turns a SonarQube client error into the stage's: SonarQube down or
// refusing the token is a clear, final stage failure (the user fixes the
// integration; an outage would otherwise keep the stage Running until its timeout),
// a cancellation stays one.
func sonarFailure(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return temporal.NewCanceledError(what + " cancelled")
	}
	switch {
	case errors.Is(err, sonar.ErrUnauthorized):
		return scanFailed("%s: SonarQube refused the integration's token; update the integration", what)
	case errors.Is(err, sonar.ErrForbidden):
		return scanFailed("%s: the integration's SonarQube token lacks the permission (it needs to create projects and run analyses): %v", what, err)
	case errors.Is(err, sonar.ErrUnreachable):
		return scanFailed("%s: SonarQube could not be reached: %v", what, err)
	}
	return scanFailed("%s: %v", what, err)
}

// codeScan runs sonar-scanner over the workspace, waits for SonarQube to process
// the report, and records the measures and the overview link; a quality gate in
// ERROR fails the stage.
func (a *Activities) codeScan(ctx context.Context, in StageInput, log io.Writer) (err error) {
	sq := in.Record.Build.Stages.CodeScan.SonarQube
	cfg := model.SonarScanConfig{}
	if sq.Config != nil {
		cfg = *sq.Config
	}
	if a.Sonar.Integrations == nil {
		return scanFailed("codeScan: this worker has no SonarQube integrations configured")
	}
	sec, err := a.Sonar.Integrations.IntegrationSecret(ctx, sq.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return scanFailed("codeScan: the SonarQube integration %q does not exist", sq.Name)
	case err != nil:
		return fmt.Errorf("read the SonarQube integration %q: %w", sq.Name, err)
	case sec.Type != model.IntegrationSonarQube:
		return scanFailed("codeScan: integration %q is a %s integration, not SonarQube", sq.Name, sec.Type)
	}
	// The token never reaches the log or the record's error, whatever SonarQube
	// or the scanner print.
	mw := &maskWriter{w: log, m: logs.NewMasker([]string{sec.Token})}
	defer mw.flush()
	log = mw
	defer func() { err = maskError(err, []string{sec.Token}) }()

	props, err := scannerProperties(cfg)
	if err != nil {
		return err
	}
	client, err := sonar.New(ctx, sec.Address, sec.Token)
	if err != nil {
		if errors.Is(err, sonar.ErrBadURL) {
			return scanFailed("codeScan: the address of integration %q is not allowed: %v", sq.Name, err)
		}
		return sonarFailure(ctx, "codeScan", err)
	}
	client.PollInterval, client.PollMaxInterval, client.PollTimeout = 500*time.Millisecond, 5*time.Second, 30*time.Minute
	if a.Sonar.PollInterval > 0 {
		client.PollInterval, client.PollMaxInterval = a.Sonar.PollInterval, 4*a.Sonar.PollInterval
	}
	if a.Sonar.PollTimeout > 0 {
		client.PollTimeout = a.Sonar.PollTimeout
	}

	stop := a.heartbeat(ctx)
	defer stop()
	key := sonar.ProjectKey(in.Record.Project, in.Record.Pipeline)
	fmt.Fprintf(log, "SonarQube %s, project %s\n", client.Address(), key)
	if err := client.EnsureProject(ctx, key, in.Record.Project+"/"+in.Record.Pipeline); err != nil {
		return sonarFailure(ctx, "create the SonarQube project", err)
	}
	if cfg.Threshold != "" {
		if err := client.SelectQualityGate(ctx, key, cfg.Threshold); err != nil {
			if errors.Is(err, sonar.ErrNotFound) {
				return scanFailed("codeScan: SonarQube has no quality gate named %q (config.threshold)", cfg.Threshold)
			}
			return sonarFailure(ctx, "select the quality gate", err)
		}
		fmt.Fprintf(log, "Quality gate: %s\n", cfg.Threshold)
	}

	// A report left by an earlier attempt must not be taken for this scan's.
	env, err := a.Executor.Setup(ctx, in.Record.ExecutorRecord())
	if err != nil {
		return fmt.Errorf("find the record's workspace: %w", err)
	}
	// Without a workspace on this host (Kubernetes) the report is out of reach:
	// the task ID comes from the scanner's output alone.
	report := ""
	if env.Workspace != "" {
		report = filepath.Join(env.Workspace, filepath.FromSlash(reportTaskFile))
		if err := os.Remove(report); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove an old scanner report: %w", err)
		}
	}

	command := a.Sonar.Command
	if len(command) == 0 {
		command = []string{"sonar-scanner"}
	}
	image := a.Sonar.Image
	if image == "" {
		image = DefaultSonarScannerImage
	}
	args := append([]string{"-Dsonar.projectKey=" + key, "-Dsonar.projectName=" + in.Record.Project + "/" + in.Record.Pipeline,
		"-Dsonar.host.url=" + client.Address()}, props...)
	step := executor.Step{
		Name:    in.Stage,
		Stage:   in.Stage,
		Image:   image,
		Command: append(append([]string{}, command...), args...),
		// The token goes in the environment, where sonar-scanner reads it, never
		// in argv (which process lists and the executor's errors show).
		Env:       append(envList(in.Record, "", nil, nil), "SONAR_TOKEN="+sec.Token, "SONAR_HOST_URL="+client.Address()),
		Resources: in.Record.resources(),
	}
	fmt.Fprintf(log, "+ %s\n", strings.Join(step.Command, " "))
	out := &tailWriter{w: log}
	if err := a.runStep(ctx, in.Env, step, out); err != nil {
		if temporal.IsApplicationError(err) && !isRetryable(err) {
			return scanFailed("sonar-scanner failed: %s", appMessage(err))
		}
		return err
	}
	taskID, err := ceTaskID(report, out.tail.Bytes())
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "Waiting for SonarQube to process the report (task %s)\n", taskID)
	task, err := client.WaitTask(ctx, taskID, func(status string) { fmt.Fprintf(log, "SonarQube task %s: %s\n", taskID, status) })
	if err != nil {
		if errors.Is(err, sonar.ErrTaskFailed) {
			return scanFailed("codeScan: %v", err)
		}
		return sonarFailure(ctx, "wait for the SonarQube analysis", err)
	}
	measures, err := client.Measures(ctx, key, sonar.Metrics)
	if err != nil {
		return sonarFailure(ctx, "read the SonarQube measures", err)
	}
	gate, err := client.GateStatus(ctx, key, task.AnalysisID)
	if err != nil {
		return sonarFailure(ctx, "read the quality gate", err)
	}
	link := client.OverviewLink(key)
	for _, m := range measures {
		fmt.Fprintf(log, "%s: %s\n", m.Metric, m.Value)
	}
	fmt.Fprintf(log, "Quality gate: %s\nOverview: %s\n", gate, link)
	result := &model.SonarQubeResult{Measures: measures, OverviewLink: link}
	if err := a.Store.UpdateStage(ctx, in.Record.RecordID, model.StageUpdate{Stage: in.Stage, SonarQube: result}); err != nil {
		return fmt.Errorf("record the SonarQube results: %w", err)
	}
	if gate == sonar.GateError {
		return scanFailed("the SonarQube quality gate failed (ERROR); see %s", link)
	}
	return nil
}

// encodingRe is what a charset name may be (UTF-8, ISO-8859-1, windows-1252...).
var encodingRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,39}$`)

// languageKeys maps the spec's language names to SonarQube's language keys.
var languageKeys = map[string]string{
	"java": "java", "javascript": "js", "js": "js", "typescript": "ts", "python": "py", "go": "go", "golang": "go",
	"php": "php", "c#": "cs", "csharp": "cs", "kotlin": "kotlin", "ruby": "ruby", "scala": "scala", "c": "c", "c++": "cpp", "cpp": "cpp",
}

// languageKeyRe is what an unlisted language key may be.
var languageKeyRe = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// scannerProperties are the -D properties of the pipeline's scan settings.
func scannerProperties(cfg model.SonarScanConfig) ([]string, error) {
	src := strings.TrimSpace(cfg.SourcePath)
	if src == "" {
		src = "./"
	}
	clean := path.Clean(filepath.ToSlash(src))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsAny(clean, ",\x00\n") {
		return nil, scanFailed("codeScan: config.sourcePath %q must be a directory inside the workspace", cfg.SourcePath)
	}
	enc := cfg.EncodingStyle
	if enc == "" {
		enc = "UTF-8"
	}
	if !encodingRe.MatchString(enc) {
		return nil, scanFailed("codeScan: config.encodingStyle %q is not a character set name", cfg.EncodingStyle)
	}
	props := []string{"-Dsonar.sources=" + clean, "-Dsonar.sourceEncoding=" + enc}
	if lang := strings.ToLower(strings.TrimSpace(cfg.Language)); lang != "" {
		key, ok := languageKeys[lang]
		if !ok {
			if !languageKeyRe.MatchString(lang) {
				return nil, scanFailed("codeScan: config.language %q is not a SonarQube language", cfg.Language)
			}
			key = lang
		}
		props = append(props, "-Dsonar.language="+key)
	}
	return props, nil
}

// ceTaskIDRe finds the task ID in the scanner's last words ("More about the report
// processing at https://sonar/api/ce/task?id=AX...").
var ceTaskIDRe = regexp.MustCompile(`api/ce/task\?id=([A-Za-z0-9_:.-]+)`)

// ceTaskID reads the compute-engine task the scanner submitted: from the report
// file in the workspace, or else (an executor whose workspace the worker cannot
// read) from the scanner's output.
func ceTaskID(report string, output []byte) (string, error) {
	if data, err := os.ReadFile(report); report != "" && err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.TrimSpace(k) == "ceTaskId" && strings.TrimSpace(v) != "" {
				return strings.TrimSpace(v), nil
			}
		}
		return "", scanFailed("codeScan: sonar-scanner's %s names no ceTaskId", reportTaskFile)
	}
	if m := ceTaskIDRe.FindAllSubmatch(output, -1); len(m) > 0 {
		return string(m[len(m)-1][1]), nil
	}
	return "", scanFailed("codeScan: sonar-scanner finished without submitting a report (no %s and no task in its output)", reportTaskFile)
}

// maskWriter masks secrets in a stream before passing it on.
type maskWriter struct {
	w io.Writer
	m *logs.Masker
}

func (mw *maskWriter) Write(p []byte) (int, error) {
	if out := mw.m.Write(p); len(out) > 0 {
		if _, err := mw.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (mw *maskWriter) flush() {
	if out := mw.m.Flush(); len(out) > 0 {
		_, _ = mw.w.Write(out)
	}
}

// tailKeep is how much of a step's output tailWriter keeps.
const tailKeep = 16 << 10

// tailWriter passes output on and keeps its last tailKeep bytes.
type tailWriter struct {
	w    io.Writer
	tail bytes.Buffer
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.tail.Write(p)
	if n := t.tail.Len(); n > 2*tailKeep {
		b := append([]byte(nil), t.tail.Bytes()[n-tailKeep:]...)
		t.tail.Reset()
		t.tail.Write(b)
	}
	return t.w.Write(p)
}
