package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
)

const ns = "cyclone-worker"

// The fake clientset has no kubelet: the tests play its part by writing the pods'
// status, and its log subresource always answers "fake logs".
const fakeLogs = "fake logs"

type fixture struct {
	cli *fake.Clientset
	e   *kubernetes.Executor
}

func newFixture(t *testing.T, mod func(*kubernetes.Config)) *fixture {
	t.Helper()
	cli := fake.NewClientset()
	cfg := testConfig(5 * time.Millisecond)
	cfg.Client = cli
	return &fixture{cli: cli, e: newExecutor(t, cfg, mod)}
}

// testConfig is the executor configuration of the tests, without its cluster.
func testConfig(poll time.Duration) kubernetes.Config {
	return kubernetes.Config{
		Namespace:        ns,
		DefaultResources: map[string]string{"requests.cpu": "250m", "limits.memory": "1Gi"},
		ImagePullPolicy:  corev1.PullIfNotPresent,
		StorageClass:     "fast",
		WorkspaceSize:    "5Gi",
		PollInterval:     poll,
	}
}

// newExecutor is kubernetes.New of cfg changed by mod (when not nil).
func newExecutor(t *testing.T, cfg kubernetes.Config, mod func(*kubernetes.Config)) *kubernetes.Executor {
	t.Helper()
	if mod != nil {
		mod(&cfg)
	}
	e, err := kubernetes.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

var rec = executor.Record{ID: "rec-1", Project: "proj", Pipeline: "pipe"}

func step(name string) executor.Step {
	return executor.Step{Name: name, Stage: "unitTest", Image: "busybox:1", Command: []string{"/bin/sh", "-ec", "make test"}}
}

type runResult struct {
	res executor.Result
	out string
	err error
}

// start runs the step in the background.
func (f *fixture) start(ctx context.Context, env executor.Environment, s executor.Step) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		var out bytes.Buffer
		res, err := f.e.Run(ctx, env, s, &out)
		done <- runResult{res, out.String(), err}
	}()
	return done
}

func wait(t *testing.T, done <-chan runResult) runResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return runResult{}
	}
}

// awaitPod waits for the pod of name to exist (and not be the one of oldUID).
func (f *fixture) awaitPod(t *testing.T, name string, notUID string) *corev1.Pod {
	t.Helper()
	return f.awaitPodIn(t, ns, name, notUID)
}

// awaitPodIn is awaitPod in namespace namespace.
func (f *fixture) awaitPodIn(t *testing.T, namespace, name string, notUID string) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := f.cli.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && (notUID == "" || string(p.UID) != notUID) {
			return p
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("get pod: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never created", name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// setState plays the kubelet: it writes the step container's state into the pod.
func (f *fixture) setState(t *testing.T, name string, phase corev1.PodPhase, state corev1.ContainerState) {
	t.Helper()
	f.setStateIn(t, ns, name, phase, state)
}

// setStateIn is setState in namespace namespace.
func (f *fixture) setStateIn(t *testing.T, namespace, name string, phase corev1.PodPhase, state corev1.ContainerState) {
	t.Helper()
	p, err := f.cli.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod: %v", err)
	}
	p.Status.Phase = phase
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "step", State: state}}
	if _, err := f.cli.CoreV1().Pods(namespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update pod status: %v", err)
	}
}

func running() corev1.ContainerState {
	return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
}

func terminated(code int32) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Completed"}}
}

// logRequests counts the log requests made so far.
func (f *fixture) logRequests() int {
	n := 0
	for _, a := range f.cli.Actions() {
		if a.GetVerb() == "get" && a.GetResource().Resource == "pods" && a.GetSubresource() == "log" {
			n++
		}
	}
	return n
}

func (f *fixture) assertGone(t *testing.T, name string) {
	t.Helper()
	if _, err := f.cli.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod %s still there after Run (get: %v)", name, err)
	}
}

func (f *fixture) setup(t *testing.T, r executor.Record) executor.Environment {
	t.Helper()
	return setup(t, f.e, r)
}

// setup sets the record's environment up on e, failing the test when it cannot.
func setup(t *testing.T, e *kubernetes.Executor, r executor.Record) executor.Environment {
	t.Helper()
	env, err := e.Setup(context.Background(), r)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return env
}

func TestSetupCreatesWorkspaceClaim(t *testing.T) {
	f := newFixture(t, nil)
	env := f.setup(t, rec)
	if want := (executor.Environment{Record: rec}); env != want {
		t.Errorf("Setup = %+v, want %+v (no workspace directory, no network)", env, want)
	}
	claims, err := f.cli.CoreV1().PersistentVolumeClaims(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(claims.Items) != 1 {
		t.Fatalf("%d claims, want 1", len(claims.Items))
	}
	c := claims.Items[0]
	if c.Name != kubernetes.WorkspaceClaimName(rec.ID) {
		t.Errorf("claim name %q, want %q", c.Name, kubernetes.WorkspaceClaimName(rec.ID))
	}
	if !reflect.DeepEqual(c.Labels, rec.Labels()) {
		t.Errorf("claim labels %v, want %v", c.Labels, rec.Labels())
	}
	if c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != "fast" {
		t.Errorf("storage class %v, want fast", c.Spec.StorageClassName)
	}
	if got := c.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("5Gi")) != 0 {
		t.Errorf("storage request %s, want 5Gi", got.String())
	}
	if !reflect.DeepEqual(c.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("access modes %v, want [ReadWriteOnce]", c.Spec.AccessModes)
	}

	// Idempotent: the same environment, still one claim.
	again := f.setup(t, rec)
	if again != env {
		t.Errorf("second Setup = %+v, want %+v", again, env)
	}
	claims, _ = f.cli.CoreV1().PersistentVolumeClaims(ns).List(context.Background(), metav1.ListOptions{})
	if len(claims.Items) != 1 {
		t.Errorf("%d claims after a second Setup, want 1", len(claims.Items))
	}
}

func TestRunPodSpecLogsAndExitCode(t *testing.T) {
	f := newFixture(t, nil)
	env := f.setup(t, rec)
	s := step("unit-test")
	s.Command = []string{"/bin/sh", "-ec", "echo $HOME $(whoami) >out"}
	s.Env = []string{"GOFLAGS=-count=1", "PRICE=$(CHEAP)", "WORKSPACE=/elsewhere"}
	s.WorkDir = "src/app"
	s.Resources = map[string]string{"requests.cpu": "0.5", "limits.cpu": "1", "requests.memory": "1G"}
	name := kubernetes.StepPodName(rec.ID, s.Name)

	done := f.start(context.Background(), env, s)
	p := f.awaitPod(t, name, "")

	wantLabels := rec.Labels()
	wantLabels[executor.LabelStage] = "unitTest"
	wantLabels[kubernetes.LabelStep] = "unit-test"
	if !reflect.DeepEqual(p.Labels, wantLabels) {
		t.Errorf("pod labels %v, want %v", p.Labels, wantLabels)
	}
	spec := p.Spec
	if spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restart policy %q, want Never", spec.RestartPolicy)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted into a step")
	}
	wantVolumes := []corev1.Volume{{Name: "workspace", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: kubernetes.WorkspaceClaimName(rec.ID)}}}}
	if !reflect.DeepEqual(spec.Volumes, wantVolumes) {
		t.Errorf("volumes %+v, want %+v", spec.Volumes, wantVolumes)
	}
	if a := spec.Affinity; a == nil || a.PodAffinity == nil || len(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels[executor.LabelRecord] != rec.ID {
		t.Errorf("affinity %+v does not keep the record's pods together on its ReadWriteOnce volume", a)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != "busybox:1" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q pull %q, want busybox:1 IfNotPresent", c.Image, c.ImagePullPolicy)
	}
	// "$" doubled: the kubelet's $(VAR) expansion gives the command back as written.
	if want := []string{"/bin/sh", "-ec", "echo $$HOME $$(whoami) >out"}; !reflect.DeepEqual(c.Command, want) || len(c.Args) != 0 {
		t.Errorf("command %q args %q, want %q", c.Command, c.Args, want)
	}
	wantEnv := []corev1.EnvVar{{Name: "GOFLAGS", Value: "-count=1"}, {Name: "PRICE", Value: "$$(CHEAP)"}, {Name: "WORKSPACE", Value: "/workspace"}}
	if !reflect.DeepEqual(c.Env, wantEnv) {
		t.Errorf("env %+v, want %+v", c.Env, wantEnv)
	}
	if c.WorkingDir != "/workspace/src/app" {
		t.Errorf("working dir %q, want /workspace/src/app", c.WorkingDir)
	}
	if want := []corev1.VolumeMount{{Name: "workspace", MountPath: executor.WorkspaceMount}}; !reflect.DeepEqual(c.VolumeMounts, want) {
		t.Errorf("mounts %+v, want %+v", c.VolumeMounts, want)
	}
	wantRes := map[string]string{"requests.cpu": "500m", "requests.memory": "1G", "limits.cpu": "1", "limits.memory": "1Gi"}
	gotRes := map[string]string{}
	for n, q := range c.Resources.Requests {
		gotRes["requests."+string(n)] = q.String()
	}
	for n, q := range c.Resources.Limits {
		gotRes["limits."+string(n)] = q.String()
	}
	if !reflect.DeepEqual(gotRes, wantRes) {
		t.Errorf("resources %v, want %v (step quota over the defaults)", gotRes, wantRes)
	}

	// Pending: Run waits, without asking for the log yet.
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("Run returned before the pod started: %+v", r)
	default:
	}
	if n := f.logRequests(); n != 0 {
		t.Errorf("%d log requests before the container started", n)
	}

	f.setState(t, name, corev1.PodRunning, running())
	deadline := time.Now().Add(10 * time.Second)
	for f.logRequests() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the log was never followed")
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, a := range f.cli.Actions() {
		if a.GetSubresource() == "log" {
			opts, ok := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
			if !ok || !opts.Follow || opts.Container != "step" {
				t.Errorf("log options %+v, want Follow of container step", a.(k8stesting.GenericAction).GetValue())
			}
		}
	}
	// Still running: Run waits for the end.
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("Run returned while the container runs: %+v", r)
	default:
	}
	f.setState(t, name, corev1.PodFailed, terminated(3))
	r := wait(t, done)
	if r.err != nil || r.res.ExitCode != 3 {
		t.Fatalf("Run = %+v, %v; want exit code 3, no error", r.res, r.err)
	}
	if r.out != fakeLogs {
		t.Errorf("output %q, want the pod's log %q", r.out, fakeLogs)
	}
	f.assertGone(t, name)
}

func TestRunSuccess(t *testing.T) {
	f := newFixture(t, nil)
	env := f.setup(t, rec)
	s := step("build")
	name := kubernetes.StepPodName(rec.ID, s.Name)
	done := f.start(context.Background(), env, s)
	f.awaitPod(t, name, "")
	// A container that ran and ended before Run looked.
	f.setState(t, name, corev1.PodSucceeded, terminated(0))
	r := wait(t, done)
	if r.err != nil || r.res.ExitCode != 0 || r.out != fakeLogs {
		t.Fatalf("Run = %+v, %q, %v; want exit code 0 with the log", r.res, r.out, r.err)
	}
	f.assertGone(t, name)
}

func TestRunCommandNotFound(t *testing.T) {
	f := newFixture(t, nil)
	env := f.setup(t, rec)
	s := step("nope")
	s.Command = []string{"nope"}
	name := kubernetes.StepPodName(rec.ID, s.Name)
	done := f.start(context.Background(), env, s)
	f.awaitPod(t, name, "")
	f.setState(t, name, corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: 128, Reason: "StartError",
		Message: `failed to create containerd task: exec: "nope": executable file not found in $PATH: unknown`,
	}})
	r := wait(t, done)
	if r.err != nil || r.res.ExitCode != 127 {
		t.Fatalf("Run = %+v, %v; want exit code 127 (command not found), no error", r.res, r.err)
	}
	if !strings.Contains(r.out, `cannot run "nope"`) {
		t.Errorf("output %q does not say the command cannot run", r.out)
	}
}

func TestRunCannotStart(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(f *fixture, t *testing.T, pod string)
		want    string
		failed  bool // the pipeline's fault (executor.FailedError), not the cluster's
	}{
		{"image pull back-off", func(f *fixture, t *testing.T, pod string) {
			f.setState(t, pod, corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason: "ImagePullBackOff", Message: `Back-off pulling image "busybox:1"`}})
		}, "ImagePullBackOff", true},
		{"unschedulable", func(f *fixture, t *testing.T, pod string) {
			p, _ := f.cli.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient cpu."}}
			if _, err := f.cli.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, "Insufficient cpu", false},
		{"evicted", func(f *fixture, t *testing.T, pod string) {
			p, _ := f.cli.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
			p.Status.Phase, p.Status.Reason, p.Status.Message = corev1.PodFailed, "Evicted", "The node was low on resource: ephemeral-storage."
			if _, err := f.cli.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, "Evicted", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *kubernetes.Config) { c.StartTimeout = 300 * time.Millisecond })
			env := f.setup(t, rec)
			s := step("test")
			name := kubernetes.StepPodName(rec.ID, s.Name)
			done := f.start(context.Background(), env, s)
			f.awaitPod(t, name, "")
			tc.prepare(f, t, name)
			r := wait(t, done)
			if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
				t.Fatalf("Run = %+v, %v; want an error mentioning %q", r.res, r.err, tc.want)
			}
			if _, failed := executor.IsFailed(r.err); failed != tc.failed {
				t.Errorf("Run = %v: a FailedError is %v, want %v", r.err, failed, tc.failed)
			}
			f.assertGone(t, name)
		})
	}
}

func TestRunCancelDeletesPod(t *testing.T) {
	f := newFixture(t, nil)
	env := f.setup(t, rec)
	s := step("long")
	name := kubernetes.StepPodName(rec.ID, s.Name)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := f.start(ctx, env, s)
	f.awaitPod(t, name, "")
	f.setState(t, name, corev1.PodRunning, running())
	for f.logRequests() == 0 {
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	r := wait(t, done)
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Run after cancel = %+v, %v; want an error wrapping context.Canceled", r.res, r.err)
	}
	f.assertGone(t, name)
	deleted := false
	for _, a := range f.cli.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && d.GetResource().Resource == "pods" && d.GetName() == name {
			deleted = true
		}
	}
	if !deleted {
		t.Error("no delete of the step's pod")
	}
}

func TestRunReplacesLeftover(t *testing.T) {
	f := newFixture(t, nil)
	env := f.setup(t, rec)
	s := step("unit-test")
	name := kubernetes.StepPodName(rec.ID, s.Name)
	// A crashed attempt left its pod running.
	labels := rec.Labels()
	labels[executor.LabelStage] = s.Stage
	leftover := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "crashed-attempt", Labels: labels,
			Annotations: map[string]string{"attempt": "1"}},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "step", Image: "old"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "step", State: running()}}},
	}
	if _, err := f.cli.CoreV1().Pods(ns).Create(context.Background(), leftover, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	done := f.start(context.Background(), env, s)
	p := f.awaitPod(t, name, "crashed-attempt")
	if p.Annotations["attempt"] != "" || p.Spec.Containers[0].Image != "busybox:1" {
		t.Fatalf("pod %s is still the leftover: %+v", name, p.ObjectMeta)
	}
	f.setState(t, name, corev1.PodSucceeded, terminated(0))
	r := wait(t, done)
	if r.err != nil || r.res.ExitCode != 0 {
		t.Fatalf("Run = %+v, %v", r.res, r.err)
	}
	var creates, deletes []string
	for _, a := range f.cli.Actions() {
		if a.GetResource().Resource != "pods" || a.GetSubresource() != "" {
			continue
		}
		switch a.GetVerb() {
		case "create":
			creates = append(creates, a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).Spec.Containers[0].Image)
		case "delete":
			deletes = append(deletes, a.(k8stesting.DeleteAction).GetName())
		}
	}
	// The test's create of the leftover, then Run's; the leftover deleted before.
	if want := []string{"old", "busybox:1"}; !reflect.DeepEqual(creates, want) {
		t.Errorf("pods created %v, want %v", creates, want)
	}
	if len(deletes) == 0 || deletes[0] != name {
		t.Errorf("pod deletions %v, want the leftover %s first", deletes, name)
	}
}

func TestRunInvalidQuota(t *testing.T) {
	for _, tc := range []struct {
		name  string
		quota map[string]string
		want  string
	}{
		{"not a quantity", map[string]string{"limits.memory": "lots"}, `limits.memory: "lots" is not a Kubernetes quantity`},
		{"unknown key", map[string]string{"cpu": "1"}, `key "cpu"`},
		{"request above limit", map[string]string{"requests.cpu": "2", "limits.cpu": "1"}, "requests.cpu (2) is above limits.cpu (1)"},
		{"negative", map[string]string{"requests.memory": "-1Gi"}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			env := f.setup(t, rec)
			s := step("test")
			s.Resources = tc.quota
			res, err := f.e.Run(context.Background(), env, s, &bytes.Buffer{})
			if !errors.Is(err, kubernetes.ErrInvalidResources) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %+v, %v; want ErrInvalidResources mentioning %q", res, err, tc.want)
			}
			if _, ok := executor.IsFailed(err); !ok {
				t.Errorf("Run = %v, want an executor.FailedError (the project's fault, not worth a retry)", err)
			}
			pods, _ := f.cli.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			if len(pods.Items) != 0 {
				t.Errorf("%d pods created for an invalid quota", len(pods.Items))
			}
		})
	}
	// The defaults are checked when the executor is made.
	_, err := kubernetes.New(kubernetes.Config{Client: fake.NewClientset(), Namespace: ns,
		DefaultResources: map[string]string{"requests.cpu": "a lot"}})
	if !errors.Is(err, kubernetes.ErrInvalidResources) {
		t.Errorf("New with invalid default resources: %v, want ErrInvalidResources", err)
	}
}

func TestParseResources(t *testing.T) {
	req, err := kubernetes.ParseResources(map[string]string{
		"requests.cpu": "0.5", "requests.memory": "1G", "limits.cpu": "1", "limits.memory": "2G", "limits.nvidia.com/gpu": "1",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1G")},
		Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("2G"),
			"nvidia.com/gpu": resource.MustParse("1")},
	}
	for _, l := range []struct{ got, want corev1.ResourceList }{{req.Requests, want.Requests}, {req.Limits, want.Limits}} {
		if len(l.got) != len(l.want) {
			t.Fatalf("resources %v, want %v", req, want)
		}
		for n, q := range l.want {
			if g := l.got[n]; g.Cmp(q) != 0 {
				t.Errorf("%s = %s, want %s", n, g.String(), q.String())
			}
		}
	}
	if empty, err := kubernetes.ParseResources(nil); err != nil || empty.Requests != nil || empty.Limits != nil {
		t.Errorf("ParseResources(nil) = %+v, %v; want nothing", empty, err)
	}
}

func TestTeardownRemovesTheRecordsObjects(t *testing.T) {
	f := newFixture(t, nil)
	other := executor.Record{ID: "rec-2", Project: "proj", Pipeline: "pipe"}
	f.setup(t, rec)
	f.setup(t, other)
	// Pods of both records left running (a worker died mid-stage).
	for i, r := range []executor.Record{rec, rec, other} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Namespace: ns, Labels: r.Labels()}}
		if _, err := f.cli.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.e.Teardown(context.Background(), rec); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	pods, _ := f.cli.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if len(pods.Items) != 1 || pods.Items[0].Name != "pod-2" {
		t.Errorf("pods after Teardown: %v, want only the other record's pod-2", names(pods.Items))
	}
	claims, _ := f.cli.CoreV1().PersistentVolumeClaims(ns).List(context.Background(), metav1.ListOptions{})
	if len(claims.Items) != 1 || claims.Items[0].Name != kubernetes.WorkspaceClaimName(other.ID) {
		t.Errorf("claims after Teardown: %d, want only the other record's", len(claims.Items))
	}
	// Idempotent, and fine without any Setup.
	if err := f.e.Teardown(context.Background(), rec); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if err := f.e.Teardown(context.Background(), executor.Record{ID: "never-set-up"}); err != nil {
		t.Errorf("Teardown without Setup: %v", err)
	}
}

func names(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func TestList(t *testing.T) {
	f := newFixture(t, nil)
	// Values that are no valid label values still come back exactly.
	odd := executor.Record{ID: "Rec/" + strings.Repeat("x", 80), Project: "my project", Pipeline: "pipe"}
	f.setup(t, rec)
	env := f.setup(t, odd)
	// A running step of odd, and something that is not ours.
	s := step("build")
	s.Stage = "Build stage"
	done := f.start(context.Background(), env, s)
	name := kubernetes.StepPodName(odd.ID, "build")
	p := f.awaitPod(t, name, "")
	for k, v := range p.Labels {
		if errs := validation.IsValidLabelValue(v); len(errs) != 0 {
			t.Errorf("label %s=%q is invalid: %v", k, v, errs)
		}
	}
	f.setState(t, name, corev1.PodRunning, running())
	foreign := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, Labels: map[string]string{"app": "web"}}}
	if _, err := f.cli.CoreV1().Pods(ns).Create(context.Background(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := f.e.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	type inst struct {
		Kind, Name string
		Record     executor.Record
		Stage      string
		State      string
		Running    bool
	}
	var gotInst []inst
	for _, i := range got {
		gotInst = append(gotInst, inst{i.Kind, i.Name, i.Record, i.Stage, i.State, i.Running})
	}
	slices.SortFunc(gotInst, func(a, b inst) int { return strings.Compare(a.Kind+a.Name, b.Kind+b.Name) })
	// Each record comes back with the namespace it is in.
	oddIn, recIn := odd, rec
	oddIn.Namespace, recIn.Namespace = ns, ns
	want := []inst{
		{executor.KindPod, name, oddIn, "Build stage", "Running", true},
		{executor.KindVolume, kubernetes.WorkspaceClaimName(odd.ID), oddIn, "", "", false},
		{executor.KindVolume, kubernetes.WorkspaceClaimName(rec.ID), recIn, "", "", false},
	}
	slices.SortFunc(want, func(a, b inst) int { return strings.Compare(a.Kind+a.Name, b.Kind+b.Name) })
	if !reflect.DeepEqual(gotInst, want) {
		t.Errorf("List =\n%+v\nwant\n%+v", gotInst, want)
	}
	// Teardown by label finds the odd record's pod and claim too.
	if err := f.e.Teardown(context.Background(), odd); err != nil {
		t.Fatal(err)
	}
	r := wait(t, done)
	if r.err == nil {
		t.Errorf("Run of a torn-down record = %+v, want an error", r.res)
	}
	got, _ = f.e.List(context.Background())
	if len(got) != 1 || got[0].Record != recIn || got[0].Kind != executor.KindVolume {
		t.Errorf("List after Teardown = %+v, want only the claim of %s", got, rec.ID)
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("Stage_Name.", 10)
	seen := map[string]bool{}
	for _, tc := range []struct{ record, step string }{
		{"rec-1", "unitTest"},
		{"rec-1", "unittest"},
		{"rec-1", "imageBuild-web"},
		{"rec-1", "imageBuild_web"},
		{"REC-1", "unitTest"},
		{"0f8fad5b-d9cb-469f-a165-70867728950e", long},
		{"0f8fad5b-d9cb-469f-a165-70867728950e", long + "2"},
		{"-x-", "--"},
	} {
		name := kubernetes.StepPodName(tc.record, tc.step)
		if errs := validation.IsDNS1123Label(name); len(errs) != 0 {
			t.Errorf("StepPodName(%q, %q) = %q: %v", tc.record, tc.step, name, errs)
		}
		if name != kubernetes.StepPodName(tc.record, tc.step) {
			t.Errorf("StepPodName(%q, %q) is not deterministic", tc.record, tc.step)
		}
		if seen[name] {
			t.Errorf("StepPodName(%q, %q) = %q, already the name of another step", tc.record, tc.step, name)
		}
		seen[name] = true
		claim := kubernetes.WorkspaceClaimName(tc.record + tc.step)
		if errs := validation.IsDNS1123Label(claim); len(errs) != 0 {
			t.Errorf("WorkspaceClaimName(%q) = %q: %v", tc.record+tc.step, claim, errs)
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  kubernetes.Config
		want string
	}{
		{"no namespace", kubernetes.Config{Client: fake.NewClientset()}, "namespace"},
		{"invalid namespace", kubernetes.Config{Client: fake.NewClientset(), Namespace: "Team_A"}, "namespace"},
		{"no client", kubernetes.Config{Namespace: ns}, "client"},
		{"pull policy", kubernetes.Config{Client: fake.NewClientset(), Namespace: ns, ImagePullPolicy: "Sometimes"}, "pull policy"},
		{"size", kubernetes.Config{Client: fake.NewClientset(), Namespace: ns, WorkspaceSize: "big"}, "workspace size"},
		{"access mode", kubernetes.Config{Client: fake.NewClientset(), Namespace: ns, WorkspaceAccessMode: "ReadOnlyMany"}, "access mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kubernetes.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestConcurrentTasksOfAStage(t *testing.T) {
	f := newFixture(t, func(c *kubernetes.Config) { c.WorkspaceAccessMode = corev1.ReadWriteMany })
	env := f.setup(t, rec)
	dones := make([]<-chan runResult, 3)
	for i := range dones {
		dones[i] = f.start(context.Background(), env, step(fmt.Sprintf("task-%d", i)))
	}
	for i := range dones {
		name := kubernetes.StepPodName(rec.ID, fmt.Sprintf("task-%d", i))
		p := f.awaitPod(t, name, "")
		if p.Spec.Affinity != nil {
			t.Errorf("pod %s has affinity %+v on a ReadWriteMany workspace", name, p.Spec.Affinity)
		}
		f.setState(t, name, corev1.PodSucceeded, terminated(int32(i)))
	}
	results := make([]runResult, len(dones))
	for i, d := range dones {
		results[i] = wait(t, d)
	}
	for i, r := range results {
		if r.err != nil || r.res.ExitCode != i || r.out != fakeLogs {
			t.Errorf("task-%d: %+v, %q, %v", i, r.res, r.out, r.err)
		}
	}
}
