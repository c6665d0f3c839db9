package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// openLog opens the log of a stage (task "") or of one task of a multi-task stage.
func (a *Activities) openLog(ctx context.Context, in StageInput, task string, attempt int32, secrets []string) (io.WriteCloser, error) {
	if a.Logs == nil {
		return nopCloser{io.Discard}, nil
	}
	return a.Logs.OpenLog(ctx, logs.Target{
		Stream: logs.Stream{
			ProjectID: in.Record.ProjectID, PipelineID: in.Record.PipelineID, RecordID: in.Record.RecordID,
			Stage: in.Stage, Task: task,
		},
		Attempt: int(attempt),
		Secrets: secrets,
	})
}

// runSecrets are the secrets a record's run knows: opened for the steps that need
// them, and masked in its logs and error messages.
type runSecrets struct {
	// mask lists every secret value: the project's SCM and registry credentials
	// and the pipeline's secret environment variables.
	mask []string
	// env holds the secret environment variables' values by model.EnvVarRef.Path;
	// the workflow's snapshot of the build carries them empty.
	env map[string]string
	// project holds the project's SCM and registry credentials (empty when the
	// project is gone).
	project store.Credentials
	// sourcePasswords holds the code sources' own passwords by index.
	sourcePasswords map[int]string
}

// loadSecrets opens the record's secrets, or takes those an earlier stage of the
// record opened on this worker moments ago. A project or pipeline deleted while the
// record runs has none left.
func (a *Activities) loadSecrets(ctx context.Context, in RecordInput) (runSecrets, error) {
	now := time.Now()
	if rs, ok := a.secrets.get(in.RecordID, now); ok {
		return rs, nil
	}
	rs, err := a.openSecrets(ctx, in)
	if err == nil {
		a.secrets.put(in.RecordID, rs, now)
	}
	return rs, err
}

func (a *Activities) openSecrets(ctx context.Context, in RecordInput) (runSecrets, error) {
	var rs runSecrets
	creds, err := a.Store.ProjectCredentials(ctx, in.ProjectID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return rs, fmt.Errorf("read the project's secrets: %w", err)
	default:
		rs.mask = append(rs.mask, creds.Secrets()...)
		rs.project = *creds
	}
	ps, err := a.Store.PipelineSecrets(ctx, in.PipelineID)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return rs, fmt.Errorf("read the pipeline's secrets: %w", err)
	default:
		rs.env, rs.sourcePasswords = ps.Env, ps.CodeSourcePasswords
		for _, v := range ps.Env {
			rs.mask = append(rs.mask, v)
		}
		for _, pw := range ps.CodeSourcePasswords {
			rs.mask = append(rs.mask, pw)
		}
	}
	rs.mask = slices.DeleteFunc(rs.mask, func(v string) bool { return v == "" })
	return rs, nil
}

// maskError hides secrets in an activity error's message, which Temporal keeps in
// its history and the workflow copies into the record's errorMessage. The error
// keeps its type and retryability.
func maskError(err error, secrets []string) error {
	if err == nil || len(secrets) == 0 {
		return err
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		msg := logs.MaskString(appErr.Message(), secrets)
		if msg == appErr.Message() {
			return err
		}
		return temporal.NewApplicationErrorWithOptions(msg, appErr.Type(), temporal.ApplicationErrorOptions{NonRetryable: appErr.NonRetryable()})
	}
	if temporal.IsCanceledError(err) {
		return err
	}
	if msg := logs.MaskString(err.Error(), secrets); msg != err.Error() {
		return errors.New(msg)
	}
	return err
}

// heartbeat keeps telling Temporal the activity is alive until stop is called; a
// cancellation of the record reaches ctx through the heartbeat's answer.
func (a *Activities) heartbeat(ctx context.Context) (stop func()) {
	interval := a.HeartbeatInterval
	if interval <= 0 {
		interval = time.Second
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	return func() { close(done) }
}

// shellScript turns the stage's command list into one sh script that stops at the
// first failing command and echoes each command before running it.
func shellScript(commands []string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "printf '%%s\\n' %s\n%s\n", shellQuote("+ "+c), c)
	}
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// envList is the environment of a step: Cyclone's own variables, then the
// pipeline's for that step (prefix names where they are, see model.EnvVarRef), with
// secret values filled in from the store.
func envList(in RecordInput, prefix string, vars []model.EnvVar, secretEnv map[string]string) []string {
	env := []string{
		"CYCLONE_PROJECT=" + in.Project,
		"CYCLONE_PIPELINE=" + in.Pipeline,
		"CYCLONE_RECORD_ID=" + in.RecordID,
		"CYCLONE_REF=" + in.Params.Ref,
	}
	for _, v := range vars {
		value := v.Value
		if v.Secret {
			value = secretEnv[prefix+"["+v.Name+"]"]
		}
		env = append(env, v.Name+"="+value)
	}
	return env
}

// runCommands runs a command stage's commands in the builder image.
func (a *Activities) runCommands(ctx context.Context, in StageInput, commands []string, secrets runSecrets, log io.Writer) error {
	img := in.Record.Build.BuilderImage
	step := executor.Step{
		Name:    in.Stage,
		Stage:   in.Stage,
		Image:   img.Image,
		Command: []string{"/bin/sh", "-c", shellScript(commands)},
		Env:     envList(in.Record, "builderImage.envVars", img.EnvVars, secrets.env),
		// Every step of the record is sized by the project's worker quota.
		Resources: in.Record.resources(),
	}
	return a.runStep(ctx, in.Env, step, log)
}

// runStep runs one step with heartbeats: a non-zero exit is a non-retryable failure,
// anything else the executor returns is an infrastructure error worth a retry.
func (a *Activities) runStep(ctx context.Context, env executor.Environment, step executor.Step, log io.Writer) error {
	stop := a.heartbeat(ctx)
	defer stop()
	res, err := a.Executor.Run(ctx, env, step, log)
	if err != nil {
		if fe, ok := executor.IsFailed(err); ok && ctx.Err() == nil {
			// The pipeline's fault (an invalid quota, an image that cannot be
			// pulled), which fails the stage at once: its log says why.
			fmt.Fprintf(log, "cyclone: %s\n", fe.Message)
		}
		return capabilityError(ctx, fmt.Errorf("run step %s: %w", step.Name, err))
	}
	if res.ExitCode != 0 {
		return temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("command exited with code %d", res.ExitCode), ErrTypeStepFailed, nil)
	}
	return nil
}
