package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// The image stages: imageBuild builds one image per build info, integrationTest runs
// a command next to service containers, imageRelease pushes the built images. They
// need executor capabilities (executor.ImageBuilder, ServiceRunner, ImagePusher)
// that only container executors have.
//
// An image is tagged imageName:{record name} (or with the tag its imageName gives),
// under the project's registry server and repository when the project has a registry, so that imageRelease (and an
// integration test naming the image) finds what imageBuild made in the same record.

// serviceStopTimeout bounds the removal of an integration test's services, which runs
// on a context of its own since the stage's may be cancelled.
const serviceStopTimeout = 30 * time.Second

// failStep is a non-retryable stage failure with a message for the record's user.
func failStep(format string, a ...any) error {
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, a...), ErrTypeStepFailed, nil)
}

// needsDocker is the failure of a stage whose executor lacks a capability.
func needsDocker(stage string) error {
	return failStep("%s needs the Docker executor; this worker's executor cannot run it", stage)
}

// capabilityError turns an executor capability's error into the stage's: the
// pipeline's own failure is final, a cancellation is a cancellation, anything else
// is retried.
func capabilityError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return temporal.NewCanceledError("stage cancelled")
	}
	if fe, ok := executor.IsFailed(err); ok {
		return failStep("%s", fe.Message)
	}
	return err
}

// imageNaming is how the record names its images.
type imageNaming struct {
	prefix string // "server/repository/" or ""
	tag    string
	built  map[string]bool // imageName of every build info
	creds  *store.Credentials
}

// ref is the full reference of a build info's image: tagged with the record's
// name unless the image name gives its own tag.
func (n imageNaming) ref(imageName string) string {
	path, tag := model.SplitImageName(imageName)
	if tag == "" {
		tag = n.tag
	}
	return n.prefix + path + ":" + tag
}

// resolve maps an image the pipeline names (an integration test's or a service's) to
// the record's image when it is one imageBuild makes; other images are left as given.
func (n imageNaming) resolve(image string) string {
	if n.built[image] {
		return n.ref(image)
	}
	return image
}

var (
	// registryHostRe is a registry's host[:port].
	registryHostRe = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?$`)
	// tagBadRe matches what a tag cannot hold.
	tagBadRe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)
)

// registryHost is a registry server as an image reference names it: no scheme, no
// trailing slash.
func registryHost(server string) string {
	s := strings.TrimSpace(server)
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	return strings.TrimRight(s, "/")
}

// tagOf turns a record name into an image tag.
func tagOf(name string) string {
	t := strings.TrimLeft(tagBadRe.ReplaceAllString(name, "-"), ".-")
	return t[:min(len(t), 128)]
}

// naming works out the record's image names: its tag (the record's name, or the
// start-time name the record gets when no checkout names it) and the project's
// registry (creds, as the stage's secrets opened them).
func (a *Activities) naming(ctx context.Context, in StageInput, creds *store.Credentials) (imageNaming, error) {
	n := imageNaming{built: map[string]bool{}}
	if s := in.Record.Build.Stages; s != nil && s.ImageBuild != nil {
		for _, bi := range s.ImageBuild.BuildInfos {
			n.built[bi.ImageName] = true
		}
	}
	name := in.Record.Params.Name
	if name == "" {
		r, err := a.Store.GetRecordByID(ctx, in.Record.RecordID)
		if err != nil {
			return n, fmt.Errorf("read the record's name: %w", err)
		}
		name = r.Name
	}
	if name == "" {
		name = in.Record.StartTime.UTC().Format("060102150405")
	}
	if n.tag = tagOf(name); n.tag == "" {
		return n, failStep("the record name %q makes no image tag", name)
	}
	n.creds = creds
	if creds.RegistryServer != "" {
		host := registryHost(creds.RegistryServer)
		if !registryHostRe.MatchString(host) {
			return n, failStep("the project's registry server %q is not a host[:port]", creds.RegistryServer)
		}
		repo := strings.Trim(creds.RegistryRepository, "/")
		if _, tag := model.SplitImageName(repo); tag != "" || !model.ValidImageName(repo) {
			return n, failStep("the project's registry repository %q is not a valid repository name", creds.RegistryRepository)
		}
		n.prefix = host + "/" + repo + "/"
	}
	return n, nil
}

// taskRun is one task of a multi-task stage.
type taskRun struct {
	name  string
	image string
	run   func(ctx context.Context, log io.Writer) error
}

// taskSet keeps the statuses of a stage's tasks and writes them to the record.
type taskSet struct {
	a     *Activities
	in    StageInput
	mu    sync.Mutex
	tasks []model.TaskStatus
}

// finish sets a task's final status and writes the task list.
func (ts *taskSet) finish(ctx context.Context, i int, status string, end time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.tasks[i].Status, ts.tasks[i].EndTime = status, &end
	ts.write(ctx)
}

// write writes the task list; ts.mu is held. The write outlives a cancellation, so
// an aborted task is recorded as such. A failed write is logged: the stage's outcome
// does not depend on it.
func (ts *taskSet) write(ctx context.Context) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	tasks := append([]model.TaskStatus(nil), ts.tasks...)
	if err := ts.a.Store.UpdateStage(wctx, ts.in.Record.RecordID, model.StageUpdate{Stage: ts.in.Stage, Tasks: tasks}); err != nil {
		ts.a.recordLogger(ts.in.Record).Warn("write task statuses", "stage", ts.in.Stage, "error", err)
	}
}

// runTasks runs the tasks in parallel, each with its own status and log, and says
// in the stage's log how each ended. The stage fails (for good) when a task failed
// through the pipeline's fault, and is retried when one met an infrastructure error.
// It also returns each task's own error (nil for a task that succeeded).
func (a *Activities) runTasks(ctx context.Context, in StageInput, secrets runSecrets, log io.Writer, runs []taskRun) ([]error, error) {
	seen := map[string]bool{}
	ts := &taskSet{a: a, in: in, tasks: make([]model.TaskStatus, len(runs))}
	start := a.now()
	for i, r := range runs {
		if seen[r.name] {
			return nil, failStep("two tasks of %s are named %q", in.Stage, r.name)
		}
		seen[r.name] = true
		ts.tasks[i] = model.TaskStatus{Name: r.name, Image: r.image, Status: model.StatusRunning, StartTime: &start}
	}
	// All the tasks start at once.
	ts.mu.Lock()
	ts.write(ctx)
	ts.mu.Unlock()
	stop := a.heartbeat(ctx)
	defer stop()
	attempt := activity.GetInfo(ctx).Attempt
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Go(func() {
			errs[i] = a.runTask(ctx, in, secrets, r, attempt)
			end := a.now()
			status := model.StatusSuccess
			switch {
			case errs[i] == nil:
			case ctx.Err() != nil:
				status = model.StatusAborted
			default:
				status = model.StatusFailed
			}
			ts.finish(ctx, i, status, end)
		})
	}
	wg.Wait()

	if ctx.Err() != nil {
		return errs, temporal.NewCanceledError("stage cancelled")
	}
	var failed []string
	var retry error
	for i, err := range errs {
		r := runs[i]
		switch {
		case err == nil:
			fmt.Fprintf(log, "Task %s: %s\n", r.name, model.StatusSuccess)
		case temporal.IsApplicationError(err) && !isRetryable(err):
			fmt.Fprintf(log, "Task %s: %s: %s\n", r.name, model.StatusFailed, appMessage(err))
			failed = append(failed, r.name+": "+appMessage(err))
		default:
			fmt.Fprintf(log, "Task %s: error, the stage will be retried\n", r.name)
			retry = errors.Join(retry, fmt.Errorf("task %s: %w", r.name, err))
		}
	}
	if retry != nil {
		return errs, retry
	}
	if len(failed) > 0 {
		return errs, failStep("%s", strings.Join(failed, "; "))
	}
	return errs, nil
}

// runTask runs one task of the stage's attempt into the task's own log; a retried
// attempt's lines follow the earlier attempt's after an attempt banner.
func (a *Activities) runTask(ctx context.Context, in StageInput, secrets runSecrets, r taskRun, attempt int32) error {
	tlog, err := a.openAttemptLog(ctx, in, r.name, attempt, secrets.mask)
	if err != nil {
		return fmt.Errorf("open the log of task %s: %w", r.name, err)
	}
	fmt.Fprintf(tlog, "Task: %s status: start\n", r.name)
	err = capabilityError(ctx, r.run(ctx, tlog))
	fmt.Fprintf(tlog, "Task: %s status: finish\n", r.name)
	if cerr := tlog.Close(); cerr != nil {
		a.recordLogger(in.Record).Warn("task log incomplete", "stage", in.Stage, "task", r.name, "error", cerr)
	}
	return err
}

// imageBuild builds each build info's image from the workspace.
func (a *Activities) imageBuild(ctx context.Context, in StageInput, secrets runSecrets, log io.Writer) error {
	s := in.Record.Build.Stages
	if s == nil || s.ImageBuild == nil || len(s.ImageBuild.BuildInfos) == 0 {
		return failStep("imageBuild is not configured")
	}
	builder, ok := a.Executor.(executor.ImageBuilder)
	if !ok {
		return needsDocker(in.Stage)
	}
	n, err := a.naming(ctx, in, &secrets.project)
	if err != nil {
		return err
	}
	labels := in.Record.ExecutorRecord().Labels()
	labels[executor.LabelStage] = in.Stage
	var runs []taskRun
	for i, bi := range s.ImageBuild.BuildInfos {
		if !model.ValidImageName(bi.ImageName) {
			return failStep("imageBuild.buildInfos[%d].imageName %q is not an image name (lower-case path such as team/web, optionally :tag)", i, bi.ImageName)
		}
		name := bi.TaskName
		if name == "" {
			name = bi.ImageName
		}
		spec := executor.BuildSpec{
			ContextDir: bi.ContextDir, DockerfilePath: bi.DockerfilePath, Dockerfile: bi.Dockerfile,
			Tag: n.ref(bi.ImageName), Labels: labels,
		}
		runs = append(runs, taskRun{name: name, image: spec.Tag, run: func(ctx context.Context, log io.Writer) error {
			return builder.BuildImage(ctx, in.Env, spec, log)
		}})
	}
	_, err = a.runTasks(ctx, in, secrets, log, runs)
	return err
}

// integrationTest starts the services, runs the test command in its image next to
// them and removes the services, whatever happened.
func (a *Activities) integrationTest(ctx context.Context, in StageInput, secrets runSecrets, log io.Writer) error {
	s := in.Record.Build.Stages
	if s == nil || s.IntegrationTest == nil || s.IntegrationTest.Config == nil {
		return failStep("integrationTest is not configured")
	}
	it := s.IntegrationTest
	runner, ok := a.Executor.(executor.ServiceRunner)
	if !ok {
		return needsDocker(in.Stage)
	}
	n, err := a.naming(ctx, in, &secrets.project)
	if err != nil {
		return err
	}
	stop := a.heartbeat(ctx)
	defer stop()
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serviceStopTimeout)
		defer cancel()
		if err := runner.StopServices(stopCtx, in.Env); err != nil {
			// Teardown removes what is left with the record's other containers.
			a.recordLogger(in.Record).Warn("remove integration test services", "error", err)
			return
		}
		if len(it.Services) > 0 {
			fmt.Fprintln(log, "Removed the services")
		}
	}()
	for _, svc := range it.Services {
		image := n.resolve(svc.Image)
		fmt.Fprintf(log, "Starting service %s (%s)\n", svc.Name, image)
		err := runner.StartService(ctx, in.Env, executor.ServiceSpec{
			Name: svc.Name, Image: image, Command: svc.Command,
			Env: envList(in.Record, "integrationTest.services["+svc.Name+"].envVars", svc.EnvVars, secrets.env),
		})
		if err != nil {
			err = capabilityError(ctx, err)
			if temporal.IsApplicationError(err) {
				fmt.Fprintf(log, "Service %s: %s\n", svc.Name, appMessage(err))
			}
			return err
		}
	}
	cfg := it.Config
	step := executor.Step{
		Name:      in.Stage,
		Stage:     in.Stage,
		Image:     n.resolve(cfg.ImageName),
		Command:   []string{"/bin/sh", "-c", shellScript(cfg.Command)},
		Env:       envList(in.Record, "integrationTest.config.envVars", cfg.EnvVars, secrets.env),
		Resources: in.Record.resources(),
	}
	return a.runStep(ctx, in.Env, step, log)
}

// imageRelease pushes the images the release policies name: Always, or
// IntegrationTestSuccess when this record's integration test succeeded.
func (a *Activities) imageRelease(ctx context.Context, in StageInput, secrets runSecrets, log io.Writer) error {
	s := in.Record.Build.Stages
	if s == nil || s.ImageRelease == nil {
		return failStep("imageRelease is not configured")
	}
	pusher, ok := a.Executor.(executor.ImagePusher)
	if !ok {
		return needsDocker(in.Stage)
	}
	n, err := a.naming(ctx, in, &secrets.project)
	if err != nil {
		return err
	}
	if n.prefix == "" {
		return failStep("the project has no registry to release images to")
	}
	auth := executor.RegistryAuth{
		Server:   registryHost(n.creds.RegistryServer),
		Username: n.creds.RegistryUsername,
		Password: n.creds.RegistryPassword,
	}
	var runs []taskRun
	seen := map[string]bool{}
	for _, pol := range s.ImageRelease.Policies() {
		if seen[pol.ImageName] {
			continue
		}
		seen[pol.ImageName] = true
		if pol.Type == model.ReleaseIntegrationTestSuccess && !in.IntegrationTestPassed {
			fmt.Fprintf(log, "Image %s is not released: its policy is IntegrationTestSuccess and the integration test did not succeed\n", pol.ImageName)
			continue
		}
		if !model.ValidImageName(pol.ImageName) {
			return failStep("imageRelease image name %q is not an image name (lower-case path such as team/web, optionally :tag)", pol.ImageName)
		}
		ref := n.ref(pol.ImageName)
		runs = append(runs, taskRun{name: pol.ImageName, image: ref, run: func(ctx context.Context, log io.Writer) error {
			return pusher.PushImage(ctx, ref, auth, log)
		}})
	}
	if len(runs) == 0 {
		fmt.Fprintln(log, "No image to release")
		return nil
	}
	errs, runErr := a.runTasks(ctx, in, secrets, log, runs)
	var pushed []string
	for i, t := range runs {
		// Pushed, whether or not the other tasks were.
		if i < len(errs) && errs[i] == nil {
			pushed = append(pushed, t.image)
		}
	}
	if len(pushed) > 0 {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := a.Store.UpdateStage(wctx, in.Record.RecordID, model.StageUpdate{Stage: in.Stage, Images: pushed}); err != nil && runErr == nil {
			return fmt.Errorf("record the released images: %w", err)
		}
	}
	return runErr
}
