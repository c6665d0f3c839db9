package activities_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
	"github.com/cycloneci/cyclone/internal/executor/local"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// hostlessExecutor is the local executor as the activities see an executor whose
// workspace is not on the worker's host (Kubernetes): Setup's Environment has no
// Workspace, so codeCheckout must run its checkout as a step. The steps still run on
// this host, in the record's workspace, with the host's git and svn.
type hostlessExecutor struct {
	local *local.Executor
	// shell, when set, runs the steps' /bin/sh scripts instead of the host's /bin/sh
	// (busybox's ash is the shell of Alpine-based checkout images).
	shell []string
	mu    sync.Mutex
	steps []executor.Step
}

func (h *hostlessExecutor) Setup(ctx context.Context, rec executor.Record) (executor.Environment, error) {
	env, err := h.local.Setup(ctx, rec)
	env.Workspace = ""
	return env, err
}

func (h *hostlessExecutor) Run(ctx context.Context, env executor.Environment, step executor.Step, out io.Writer) (executor.Result, error) {
	h.mu.Lock()
	h.steps = append(h.steps, step)
	h.mu.Unlock()
	if env.Workspace != "" {
		panic("the activity made up a workspace")
	}
	real, err := h.local.Setup(ctx, env.Record)
	if err != nil {
		return executor.Result{}, err
	}
	if len(h.shell) > 0 && step.Command[0] == "/bin/sh" {
		step.Command = append(slices.Clone(h.shell), step.Command[1:]...)
	}
	return h.local.Run(ctx, real, step, out)
}

func (h *hostlessExecutor) Teardown(ctx context.Context, rec executor.Record) error {
	return h.local.Teardown(ctx, rec)
}

func (h *hostlessExecutor) workspace(t *testing.T, rec executor.Record) string {
	t.Helper()
	env, err := h.local.Setup(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	return env.Workspace
}

func (h *hostlessExecutor) lastStep(t *testing.T) executor.Step {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.steps) == 0 {
		t.Fatal("no step ran")
	}
	return h.steps[len(h.steps)-1]
}

var testQuota = map[string]string{"requests.cpu": "0.5", "limits.memory": "2G"}

// checkoutInput is a codeCheckout stage of record id from one "Other" source.
func checkoutInput(id, srcType, url, user, ref string) activities.StageInput {
	return activities.StageInput{
		Stage: model.StageCodeCheckout,
		Record: activities.RecordInput{
			RecordID: id, Project: "proj", Pipeline: "pipe", Params: model.PerformParams{Ref: ref},
			StartTime: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), Quota: maps.Clone(testQuota),
			Build: &model.Build{Stages: &model.Stages{CodeCheckout: &model.CodeCheckoutStage{CodeSources: []model.CodeSource{{
				Type: srcType, Main: true, OtherCodeSource: &model.OtherCodeSource{URL: url, Username: user},
			}}}}},
		},
	}
}

func runCheckout(a *activities.Activities, in activities.StageInput, password string) (*model.Commit, string, string, error) {
	var log bytes.Buffer
	commit, name, err := a.CodeCheckout(context.Background(), in, password, &log)
	return commit, name, log.String(), err
}

// assertNoSecretInCommand checks that the data of the checkout is in the step's
// environment, never its command.
func assertNoSecretInCommand(t *testing.T, step executor.Step, secrets ...string) {
	t.Helper()
	cmd := strings.Join(step.Command, "\x00")
	for _, s := range secrets {
		if s != "" && strings.Contains(cmd, s) {
			t.Fatalf("the step's command holds %q:\n%s", s, cmd)
		}
	}
}

// watchArgv puts wrappers of progs first on PATH, which append the arguments of
// every run to a file before they run the real program, and returns the file.
func watchArgv(t *testing.T, progs ...string) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "argv.log")
	for _, prog := range progs {
		real, err := exec.LookPath(prog)
		if err != nil {
			t.Fatalf("%s is required: %v", prog, err)
		}
		script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\n' \"$*\" >> '%s'\nexec '%s' \"$@\"\n", file, real)
		if err := os.WriteFile(filepath.Join(dir, prog), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return file
}

// assertArgv checks that the programs watchArgv watched ran (want is in their
// arguments) and that none of them had a secret in its arguments.
func assertArgv(t *testing.T, file, want string, secrets ...string) {
	t.Helper()
	argv, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(argv), want) {
		t.Fatalf("the programs' arguments (%v) lack %q:\n%s", err, want, argv)
	}
	for _, s := range secrets {
		if strings.Contains(string(argv), s) {
			t.Fatalf("a program ran with %q in its arguments:\n%s", s, argv)
		}
	}
}

func TestCheckoutStepGit(t *testing.T) {
	const user, password = "carol", "pw-s3cr3t"
	gs := testenv.StartPrivateGitServer(t, user, password)
	url := gs.Repo("app", map[string]string{"README.md": "one\n"},
		map[string]string{"data.txt": "two\n"}, map[string]string{"data.txt": "three\n"})
	gs.Tag("app", "v1.0", "master~1")
	first := gs.RevParse("app", "master~2")
	tagged := gs.RevParse("app", "v1.0")
	head := gs.Head("app")
	argv := watchArgv(t, "git")
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox is required (make test-deps installs busybox-static): %v", err)
	}
	for name, shell := range map[string][]string{"host-sh": nil, "busybox-sh": {busybox, "sh"}} {
		t.Run(name, func(t *testing.T) {
			ex := &hostlessExecutor{local: local.New(t.TempDir()), shell: shell}
			a := &activities.Activities{Executor: ex, CheckoutImage: "example/git:1"}
			header := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))

			for i, tc := range []struct{ ref, want, data string }{
				{"master", head, "three\n"},
				{"v1.0", tagged, "two\n"},
				{first, first, ""},
			} {
				in := checkoutInput("rec-git-"+string(rune('a'+i)), "Other", url, user, tc.ref)
				commit, name, log, err := runCheckout(a, in, password)
				if err != nil {
					t.Fatalf("ref %s: %v\n%s", tc.ref, err, log)
				}
				if commit == nil || commit.ID != tc.want {
					t.Fatalf("ref %s: commit %+v, want %s", tc.ref, commit, tc.want)
				}
				if commit.Author != "Test Author <author@example.com>" || !strings.HasPrefix(commit.Message, "commit I") || commit.Date == "" {
					t.Fatalf("ref %s: commit %+v", tc.ref, commit)
				}
				if want := tc.want[:7] + "-261123120000"; name != want {
					t.Fatalf("ref %s: record name %q, want %q", tc.ref, name, want)
				}
				ws := ex.workspace(t, in.Record.ExecutorRecord())
				data, err := os.ReadFile(filepath.Join(ws, "data.txt"))
				if tc.data == "" {
					if err == nil {
						t.Fatalf("ref %s: data.txt exists in the first commit's checkout", tc.ref)
					}
				} else if string(data) != tc.data {
					t.Fatalf("ref %s: data.txt %q (%v), want %q", tc.ref, data, err, tc.data)
				}
				cfg, err := os.ReadFile(filepath.Join(ws, ".git", "config"))
				if err != nil || strings.Contains(string(cfg), header) || strings.Contains(string(cfg), "extraheader") {
					t.Fatalf("ref %s: .git/config (%v):\n%s", tc.ref, err, cfg)
				}

				step := ex.lastStep(t)
				if step.Name != model.StageCodeCheckout || step.Stage != model.StageCodeCheckout || step.Image != "example/git:1" {
					t.Fatalf("step %q stage %q image %q", step.Name, step.Stage, step.Image)
				}
				if !maps.Equal(step.Resources, testQuota) {
					t.Fatalf("step resources %v, want %v", step.Resources, testQuota)
				}
				assertNoSecretInCommand(t, step, password, header, url, tc.ref)
				if !slices.Contains(step.Env, activities.EnvCheckoutURL+"="+url) || !slices.Contains(step.Env, activities.EnvCheckoutRef+"="+tc.ref) ||
					!slices.Contains(step.Env, "GIT_TERMINAL_PROMPT=0") ||
					!slices.ContainsFunc(step.Env, func(kv string) bool { return strings.HasSuffix(kv, "=Authorization: Basic "+header) }) {
					t.Fatalf("step env %q", step.Env)
				}
				// The report lines stay out of the log; the log says what was checked out.
				for _, leak := range []string{activities.CheckoutMarkPrefix, password, header} {
					if strings.Contains(log, leak) {
						t.Fatalf("ref %s: the log shows %q:\n%s", tc.ref, leak, log)
					}
				}
				if !strings.Contains(log, "Checked out "+tc.want+" (commit I") {
					t.Fatalf("ref %s: log:\n%s", tc.ref, log)
				}
			}

			// A ref that does not exist, a wrong password and no credentials fail the
			// stage for good, with the worker's own messages.
			for i, tc := range []struct{ ref, password, want, notWant string }{
				{"no-such-branch", password, `git fetch failed (exit code 128): ref "no-such-branch" of ` + url + ` could not be checked out`, "no credentials"},
				{"master", "wrong", `git fetch failed (exit code 128): ref "master"`, "no credentials"},
				{"master", "", "(no credentials were given for this repository)", ""},
			} {
				in := checkoutInput("rec-git-fail-"+string(rune('a'+i)), "Other", url, user, tc.ref)
				_, _, log, err := runCheckout(a, in, tc.password)
				var appErr *temporal.ApplicationError
				if !temporalAppError(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != activities.ErrTypeStepFailed {
					t.Fatalf("ref %s: error %v, want a non-retryable step failure\n%s", tc.ref, err, log)
				}
				if msg := appErr.Message(); !strings.Contains(msg, tc.want) || (tc.notWant != "" && strings.Contains(msg, tc.notWant)) {
					t.Fatalf("ref %s: message %q, want %q", tc.ref, msg, tc.want)
				}
				if strings.Contains(log, activities.CheckoutMarkPrefix) || (tc.password != "" && strings.Contains(log, tc.password)) {
					t.Fatalf("ref %s: log:\n%s", tc.ref, log)
				}
			}
		})
	}
	assertArgv(t, argv, "fetch --no-tags", password, base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

func temporalAppError(err error, target **temporal.ApplicationError) bool {
	return errors.As(err, target)
}

func TestCheckoutStepSVN(t *testing.T) {
	const user, password = "alice", "svn-s3cr3t"
	svn := testenv.StartSVNServer(t, user, password)
	rev := svn.Commit("add the build", map[string]string{"trunk/pom.xml": "<project/>\n"})
	argv := watchArgv(t, "svn")
	ex := &hostlessExecutor{local: local.New(t.TempDir())}
	a := &activities.Activities{Executor: ex}

	in := checkoutInput("rec-svn-a", model.SCMSVN, svn.URL, user, "trunk")
	commit, name, log, err := runCheckout(a, in, password)
	if err != nil {
		t.Fatalf("svn checkout: %v\n%s", err, log)
	}
	if commit == nil || commit.ID != rev || name != rev+"-261123120000" {
		t.Fatalf("commit %+v name %q, want revision %s", commit, name, rev)
	}
	if data, err := os.ReadFile(filepath.Join(ex.workspace(t, in.Record.ExecutorRecord()), "pom.xml")); err != nil || string(data) != "<project/>\n" {
		t.Fatalf("pom.xml %q (%v)", data, err)
	}
	step := ex.lastStep(t)
	if step.Image != activities.DefaultCheckoutImage || !maps.Equal(step.Resources, testQuota) {
		t.Fatalf("step image %q resources %v", step.Image, step.Resources)
	}
	assertNoSecretInCommand(t, step, password, svn.URL, "trunk")
	assertArgv(t, argv, "--password-from-stdin", password)
	if strings.Contains(log, password) || strings.Contains(log, activities.CheckoutMarkPrefix) || !strings.Contains(log, "Checked out "+rev) {
		t.Fatalf("log:\n%s", log)
	}

	// A revision that does not exist fails for good, quoting svn.
	_, _, log, err = runCheckout(a, checkoutInput("rec-svn-b", model.SCMSVN, svn.URL, user, "trunk@999"), password)
	var appErr *temporal.ApplicationError
	if !temporalAppError(err, &appErr) || !appErr.NonRetryable() ||
		!strings.Contains(appErr.Message(), `svn checkout of "trunk@999" from `+svn.URL+"/trunk failed (exit code 1): \"svn: E") ||
		strings.Contains(appErr.Message(), password) {
		t.Fatalf("missing revision: %v\n%s", err, log)
	}
}

// playKubelet waits for the step pod of the record, hands its spec to the test and
// ends its container with code.
func playKubelet(t *testing.T, cli *fake.Clientset, ns, name string, code int32, pods chan<- *corev1.Pod) {
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		p, err := cli.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		pods <- p.DeepCopy()
		p.Status.Phase = corev1.PodSucceeded
		if code != 0 {
			p.Status.Phase = corev1.PodFailed
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "step", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Completed"}}}}
		if _, err := cli.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Errorf("update pod status: %v", err)
		}
		return
	}
	t.Errorf("pod %s never created", name)
	close(pods)
}

// On the Kubernetes executor (client-go's fake clientset, the test playing the
// kubelet) codeCheckout runs a pod of the checkout image, sized by the quota, with the
// repository, ref and credentials in its environment only. The fake's log is always
// "fake logs": no report, which is a retryable error, and a failing pod without a
// report is a step failure naming the image.
func TestCheckoutStepKubernetes(t *testing.T) {
	const ns = "cyclone-test"
	cli := fake.NewClientset()
	ex, err := kubernetes.New(kubernetes.Config{Client: cli, Namespace: ns, PollInterval: 2 * time.Millisecond,
		DefaultResources: map[string]string{"requests.memory": "256Mi"}})
	if err != nil {
		t.Fatal(err)
	}
	a := &activities.Activities{Executor: ex, CheckoutImage: "registry.example.com/git:2"}
	const url, user, password = "https://10.0.0.7/team/app.git", "bob", "k8s-s3cr3t"
	in := checkoutInput("rec-k8s", "Other", url, user, "release/1.2")
	name := kubernetes.StepPodName(in.Record.RecordID, model.StageCodeCheckout)

	pods := make(chan *corev1.Pod, 1)
	go playKubelet(t, cli, ns, name, 0, pods)
	_, _, log, err := runCheckout(a, in, password)
	if err == nil || !strings.Contains(err.Error(), "did not report") || !activities.IsRetryable(err) {
		t.Fatalf("checkout with the fake's logs: %v, want a retryable error about the missing report", err)
	}
	if !strings.Contains(log, "fake logs") || strings.Contains(log, password) {
		t.Fatalf("log:\n%s", log)
	}
	pod := <-pods
	if pod == nil {
		t.FailNow()
	}
	c := pod.Spec.Containers[0]
	if c.Image != "registry.example.com/git:2" || c.WorkingDir != executor.WorkspaceMount {
		t.Fatalf("container image %q workdir %q", c.Image, c.WorkingDir)
	}
	cmd := strings.Join(c.Command, "\x00")
	header := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	for _, s := range []string{password, header, url, "release/1.2"} {
		if strings.Contains(cmd, s) {
			t.Fatalf("the pod's command holds %q:\n%s", s, cmd)
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env[activities.EnvCheckoutURL] != url || env[activities.EnvCheckoutRef] != "release/1.2" || env["GIT_CONFIG_VALUE_0"] != "Authorization: Basic "+header ||
		!strings.HasPrefix(env[activities.EnvCheckoutMark], activities.CheckoutMarkPrefix) || env["GIT_CONFIG_NOSYSTEM"] != "1" {
		t.Fatalf("pod env %v", env)
	}
	if _, ok := env["PATH"]; ok {
		t.Fatalf("the worker's PATH reached the pod: %v", env)
	}
	wantRes := map[corev1.ResourceName]string{"cpu": "500m", "memory": "256Mi"}
	for name, want := range wantRes {
		got := c.Resources.Requests[name]
		if got.Cmp(resource.MustParse(want)) != 0 {
			t.Fatalf("requests.%s = %s, want %s (resources %v)", name, got.String(), want, c.Resources)
		}
	}
	if got := c.Resources.Limits[corev1.ResourceMemory]; got.Cmp(resource.MustParse("2G")) != 0 {
		t.Fatalf("limits.memory = %s, want 2G", got.String())
	}

	// A pod that fails without a report (its image has no /bin/sh, say).
	in.Record.RecordID = "rec-k8s-2"
	pods = make(chan *corev1.Pod, 1)
	go playKubelet(t, cli, ns, kubernetes.StepPodName(in.Record.RecordID, model.StageCodeCheckout), 2, pods)
	_, _, _, err = runCheckout(a, in, password)
	var appErr *temporal.ApplicationError
	if !temporalAppError(err, &appErr) || !appErr.NonRetryable() || !strings.Contains(appErr.Message(), "exited with code 2") ||
		!strings.Contains(appErr.Message(), "registry.example.com/git:2") {
		t.Fatalf("failing pod: %v", err)
	}
	<-pods
}
