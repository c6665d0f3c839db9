//go:build linux

package kubernetes_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
)

// rbacManifest holds the worker's ServiceAccount, Role and RoleBinding as deployed.
const rbacManifest = "../../../deploy/kubernetes/rbac.yaml"

var (
	yamlSeparator = regexp.MustCompile(`(?m)^---\s*$`)
	yamlComment   = regexp.MustCompile(`(?m)^\s*#.*$`)
)

// worker is the executor's identity on the test cluster: the ServiceAccount of
// rbacManifest with its Role in the default namespace (ns), and a token requested for
// it, as the worker's pod would have.
type worker struct {
	c      *cluster
	config *rest.Config
	role   *rbacv1.Role
	bind   *rbacv1.RoleBinding
}

// newWorker creates the objects of rbacManifest (and their namespaces) and requests
// a token for the ServiceAccount.
func newWorker(t *testing.T, c *cluster) *worker {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile(rbacManifest)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{c: c}
	var sa *corev1.ServiceAccount
	decode := scheme.Codecs.UniversalDeserializer()
	for _, doc := range yamlSeparator.Split(string(raw), -1) {
		if strings.TrimSpace(yamlComment.ReplaceAllString(doc, "")) == "" {
			continue
		}
		obj, _, err := decode.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", rbacManifest, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.Role:
			w.role = o
		case *rbacv1.RoleBinding:
			w.bind = o
		default:
			t.Fatalf("%s: unexpected %T", rbacManifest, obj)
		}
	}
	if sa == nil || w.role == nil || w.bind == nil {
		t.Fatalf("%s: want a ServiceAccount, a Role and a RoleBinding", rbacManifest)
	}
	if w.role.Namespace != ns {
		t.Fatalf("the Role is in namespace %q, the tests' default namespace is %q", w.role.Namespace, ns)
	}
	c.namespace(t, sa.Namespace)
	if _, err := c.admin.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.namespace(t, ns, true)
	expiry := int64(3600)
	tok, err := c.admin.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of service account %s/%s: %v", sa.Namespace, sa.Name, err)
	}
	w.config = c.config(tok.Status.Token)
	return w
}

// namespace creates a namespace for records, as an administrator would: pods held to
// the baseline Pod Security Standard, the "default" ServiceAccount (made by the
// controller manager in a real cluster; the API server refuses pods without it), and
// with granted, the worker's Role and RoleBinding (the README: the worker's
// ServiceAccount needs the same rights in every namespace of records).
func (w *worker) namespace(t *testing.T, name string, granted bool) {
	t.Helper()
	ctx := context.Background()
	c := w.c
	c.namespace(t, name)
	if _, err := c.admin.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !granted {
		return
	}
	role, bind := w.role.DeepCopy(), w.bind.DeepCopy()
	role.Namespace, bind.Namespace = name, name
	if _, err := c.admin.RbacV1().Roles(name).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admin.RbacV1().RoleBindings(name).Create(ctx, bind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// namespace creates a namespace whose pods must meet the baseline Pod Security
// Standard (no host namespaces, paths or ports, no privileged containers, no added
// capabilities).
func (c *cluster) namespace(t *testing.T, name string) {
	t.Helper()
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "baseline",
	}}}
	if _, err := c.admin.CoreV1().Namespaces().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// executor makes an executor that talks to the API server as the worker, from a
// rest.Config as in production.
func (w *worker) executor(t *testing.T, mod func(*kubernetes.Config)) *kubernetes.Executor {
	t.Helper()
	cfg := testConfig(20 * time.Millisecond)
	cfg.RESTConfig = w.config
	return newExecutor(t, cfg, mod)
}

// startRun runs the step in the background.
func startRun(ctx context.Context, e *kubernetes.Executor, env executor.Environment, s executor.Step) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		var out strings.Builder
		res, err := e.Run(ctx, env, s, &out)
		done <- runResult{res, out.String(), err}
	}()
	return done
}

// lockedBuffer is a step's output that the test reads while Run writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// returned fails the test if Run has returned.
func returned(t *testing.T, done <-chan runResult, while string) {
	t.Helper()
	select {
	case r := <-done:
		t.Fatalf("Run returned %+v, %v while %s", r.res, r.err, while)
	case <-time.After(200 * time.Millisecond):
	}
}

// assertPodGone checks that the pod no longer exists.
func (c *cluster) assertPodGone(t *testing.T, namespace, name string) {
	t.Helper()
	if p, err := c.admin.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod %s/%s still there (deletion %v, get: %v)", namespace, name, p.DeletionTimestamp, err)
	}
}

// assertPodDeleted checks that the pod was deleted with the executor's grace period:
// it is on a node, so it stays until the kubelet has killed its container; the test
// then plays the kubelet's final deletion.
func (c *cluster) assertPodDeleted(t *testing.T, namespace, name string) {
	t.Helper()
	ctx := context.Background()
	p, err := c.admin.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", namespace, name, err)
	}
	if p.DeletionTimestamp == nil || p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 1 {
		t.Errorf("pod %s/%s: deletion %v grace %v, want deleted with a grace period of 1s", namespace, name, p.DeletionTimestamp, p.DeletionGracePeriodSeconds)
	}
	zero := int64(0)
	if err := c.admin.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	c.assertPodGone(t, namespace, name)
}

// TestAPIServer runs the executor against a real API server and etcd (cluster_test.go),
// as the ServiceAccount of the deployed RBAC manifest: what the fake clientset cannot
// check (validation and defaulting of the objects, admission, RBAC, the claim's
// protection finalizer, graceful deletion of pods on a node, the log subresource
// forwarded to a node's kubelet) is checked here. No container ever runs: the test
// plays the scheduler and the kubelet where a step needs to progress.
func TestAPIServer(t *testing.T) {
	c := startCluster(t)
	w := newWorker(t, c)

	// A project and pipeline whose names are no valid label values: the labels are
	// derived values, the annotations hold them as written.
	const project, pipeline = "Team α/web", "release-to-production-for-every-region-of-the-world-and-some-more-of-them"

	t.Run("Setup", func(t *testing.T) {
		e := w.executor(t, nil)
		r := executor.Record{ID: "api-setup", Project: project, Pipeline: pipeline}
		env := setup(t, e, r)
		if want := (executor.Environment{Record: r}); env != want {
			t.Errorf("Setup = %+v, want %+v", env, want)
		}
		claim, err := c.admin.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), kubernetes.WorkspaceClaimName(r.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the workspace claim: %v", err)
		}
		if !reflect.DeepEqual(claim.Annotations, r.Labels()) {
			t.Errorf("claim annotations %v, want the exact values %v", claim.Annotations, r.Labels())
		}
		if claim.Labels[executor.LabelRecord] != r.ID || claim.Labels[executor.LabelManaged] != "true" {
			t.Errorf("claim labels %v: want the record %s, managed", claim.Labels, r.ID)
		}
		for _, k := range []string{executor.LabelProject, executor.LabelPipeline} {
			if v := claim.Labels[k]; v == "" || v == r.Labels()[k] || len(validation.IsValidLabelValue(v)) != 0 {
				t.Errorf("claim label %s = %q, want a valid label value derived from %q", k, v, r.Labels()[k])
			}
		}
		if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "fast" {
			t.Errorf("storage class %v, want fast", claim.Spec.StorageClassName)
		}
		if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != "5Gi" {
			t.Errorf("storage request %s, want 5Gi", got.String())
		}
		if !reflect.DeepEqual(claim.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("access modes %v, want [ReadWriteOnce]", claim.Spec.AccessModes)
		}
		// The API server's admission protects a claim: it outlives its deletion until
		// no pod uses it (see Teardown below).
		if !slices.Contains(claim.Finalizers, "kubernetes.io/pvc-protection") {
			t.Errorf("claim finalizers %v, want kubernetes.io/pvc-protection from the API server's admission", claim.Finalizers)
		}
		// Idempotent.
		if again, err := e.Setup(context.Background(), r); err != nil || again != env {
			t.Errorf("second Setup = %+v, %v; want %+v", again, err, env)
		}
		claims, err := c.admin.CoreV1().PersistentVolumeClaims(ns).List(context.Background(), metav1.ListOptions{LabelSelector: executor.LabelRecord + "=" + r.ID})
		if err != nil || len(claims.Items) != 1 {
			t.Errorf("claims of the record after a second Setup: %d, %v; want 1", len(claims.Items), err)
		}
	})

	t.Run("Run", func(t *testing.T) {
		e := w.executor(t, nil)
		r := executor.Record{ID: "api-run", Project: project, Pipeline: "pipe"}
		env := setup(t, e, r)
		s := executor.Step{
			Name: "Unit Test (α)", Stage: "unit test", Image: "busybox:1",
			Command:   []string{"/bin/sh", "-ec", "echo $HOME $(whoami) >out"},
			Env:       []string{"GOFLAGS=-count=1", "PRICE=$(CHEAP)"},
			WorkDir:   "src/app",
			Resources: map[string]string{"requests.cpu": "0.5", "limits.cpu": "1", "requests.memory": "1G"},
		}
		name := kubernetes.StepPodName(r.ID, s.Name)
		const output = "compiling\nok  \tall tests passed\n"
		log := c.kubelet.script(ns, name, output)
		done := startRun(context.Background(), e, env, s)
		p := c.awaitPod(t, ns, name, "")

		// The pod as the API server admitted it (defaulted, mutated by admission).
		if p.Annotations[kubernetes.LabelStep] != s.Name || p.Annotations[executor.LabelStage] != s.Stage || p.Annotations[executor.LabelProject] != project {
			t.Errorf("pod annotations %v, want the exact step, stage and project", p.Annotations)
		}
		sel := executor.LabelManaged + "=true," + executor.LabelRecord + "=" + r.ID
		pods, err := c.admin.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) != 1 || pods.Items[0].Name != name {
			t.Errorf("pods selected by %s: %v, want %s", sel, names(pods.Items), name)
		}
		if p.Spec.ServiceAccountName != "default" {
			t.Errorf("service account %q, want the namespace's default (set by admission)", p.Spec.ServiceAccountName)
		}
		// No token: the ServiceAccount admission adds no token volume to the step.
		if len(p.Spec.Volumes) != 1 || p.Spec.Volumes[0].PersistentVolumeClaim == nil || p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != kubernetes.WorkspaceClaimName(r.ID) {
			t.Errorf("volumes %+v, want the workspace claim only (no service account token)", p.Spec.Volumes)
		}
		if p.Spec.EnableServiceLinks == nil || *p.Spec.EnableServiceLinks {
			t.Error("service links are enabled")
		}
		if a := p.Spec.Affinity; a == nil || a.PodAffinity == nil || len(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
			a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].TopologyKey != corev1.LabelHostname {
			t.Errorf("affinity %+v, want the record's pods kept on one node", a)
		}
		ctr := p.Spec.Containers[0]
		if want := []string{"/bin/sh", "-ec", "echo $$HOME $$(whoami) >out"}; !reflect.DeepEqual(ctr.Command, want) {
			t.Errorf("command %q, want %q", ctr.Command, want)
		}
		wantEnv := []corev1.EnvVar{{Name: "GOFLAGS", Value: "-count=1"}, {Name: "PRICE", Value: "$$(CHEAP)"}, {Name: "WORKSPACE", Value: executor.WorkspaceMount}}
		if !reflect.DeepEqual(ctr.Env, wantEnv) {
			t.Errorf("env %+v, want %+v", ctr.Env, wantEnv)
		}
		if ctr.WorkingDir != "/workspace/src/app" || ctr.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("working dir %q, pull policy %q", ctr.WorkingDir, ctr.ImagePullPolicy)
		}
		gotRes := map[string]string{}
		for n, q := range ctr.Resources.Requests {
			gotRes["requests."+string(n)] = q.String()
		}
		for n, q := range ctr.Resources.Limits {
			gotRes["limits."+string(n)] = q.String()
		}
		if want := map[string]string{"requests.cpu": "500m", "requests.memory": "1G", "limits.cpu": "1", "limits.memory": "1Gi"}; !reflect.DeepEqual(gotRes, want) {
			t.Errorf("resources %v, want %v", gotRes, want)
		}
		if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
			t.Errorf("pod on node %q in phase %q, want pending and unscheduled", p.Spec.NodeName, p.Status.Phase)
		}

		returned(t, done, "the pod is not scheduled")
		c.bind(t, ns, name, testNode)
		returned(t, done, "the pod is scheduled but its container is not started")
		select {
		case <-log.requests:
			t.Fatal("the log was asked for before the container started")
		default:
		}
		c.setStatus(t, ns, name, corev1.PodRunning, running())
		req := log.awaitRequest(t)
		if req.URL.Path != "/containerLogs/"+ns+"/"+name+"/step" || req.URL.Query().Get("follow") != "true" {
			t.Errorf("the kubelet was asked for %s, want the followed log of container step", req.URL)
		}
		returned(t, done, "the container runs")
		c.setStatus(t, ns, name, corev1.PodFailed, terminated(3))
		close(log.end)
		res := wait(t, done)
		if res.err != nil || res.res.ExitCode != 3 {
			t.Fatalf("Run = %+v, %v; want exit code 3", res.res, res.err)
		}
		if res.out != output {
			t.Errorf("output %q, want the log %q", res.out, output)
		}
		// A pod that has ended is deleted at once, without the kubelet.
		c.assertPodGone(t, ns, name)
	})

	t.Run("Cancel", func(t *testing.T) {
		e := w.executor(t, nil)
		r := executor.Record{ID: "api-cancel", Project: "proj", Pipeline: "pipe"}
		env := setup(t, e, r)
		s := step("long")
		name := kubernetes.StepPodName(r.ID, s.Name)
		log := c.kubelet.script(ns, name, "started\n")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out := &lockedBuffer{}
		done := make(chan runResult, 1)
		go func() {
			res, err := e.Run(ctx, env, s, out)
			done <- runResult{res, out.String(), err}
		}()
		c.awaitPod(t, ns, name, "")
		c.bind(t, ns, name, testNode)
		c.setStatus(t, ns, name, corev1.PodRunning, running())
		log.awaitRequest(t)
		// The log comes as the kubelet writes it, through the API server.
		for deadline := time.Now().Add(10 * time.Second); out.String() != "started\n"; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("output %q while the step runs, want its log so far", out.String())
			}
		}
		cancel()
		res := wait(t, done)
		if !errors.Is(res.err, context.Canceled) {
			t.Fatalf("Run after cancel = %+v, %v; want an error wrapping context.Canceled", res.res, res.err)
		}
		if res.out != "started\n" {
			t.Errorf("output %q, want the log so far", res.out)
		}
		// The followed log was closed on the kubelet's side too.
		select {
		case <-log.abandoned:
		case <-time.After(10 * time.Second):
			t.Error("the kubelet's log stream was not closed after the cancel")
		}
		c.assertPodDeleted(t, ns, name)
	})

	t.Run("NotScheduled", func(t *testing.T) {
		e := w.executor(t, func(cfg *kubernetes.Config) { cfg.StartTimeout = time.Second })
		r := executor.Record{ID: "api-unscheduled", Project: "proj", Pipeline: "pipe"}
		env := setup(t, e, r)
		s := step("waits")
		name := kubernetes.StepPodName(r.ID, s.Name)
		done := startRun(context.Background(), e, env, s)
		p := c.awaitPod(t, ns, name, "")
		// The scheduler finds no node for it.
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.", LastTransitionTime: metav1.Now()}}
		if _, err := c.admin.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		res := wait(t, done)
		if res.err == nil || !strings.Contains(res.err.Error(), "not started after 1s (Unschedulable: 0/1 nodes are available") {
			t.Fatalf("Run = %+v, %v; want an error saying the pod was not scheduled in time, and why", res.res, res.err)
		}
		if _, ok := executor.IsFailed(res.err); ok {
			t.Errorf("Run = %v, a FailedError; want an error of the cluster (worth a retry)", res.err)
		}
		// Never on a node: deleted at once.
		c.assertPodGone(t, ns, name)
	})

	t.Run("LogUnavailable", func(t *testing.T) {
		// A pod whose node the API server cannot reach for its log (here: a node
		// that is not registered): the attempt fails as the cluster's fault, and its
		// pod is deleted.
		e := w.executor(t, nil)
		r := executor.Record{ID: "api-nolog", Project: "proj", Pipeline: "pipe"}
		env := setup(t, e, r)
		s := step("test")
		name := kubernetes.StepPodName(r.ID, s.Name)
		done := startRun(context.Background(), e, env, s)
		c.awaitPod(t, ns, name, "")
		c.bind(t, ns, name, "unregistered-node")
		c.setStatus(t, ns, name, corev1.PodRunning, running())
		res := wait(t, done)
		if res.err == nil || !strings.Contains(res.err.Error(), "follow log of pod "+ns+"/"+name) {
			t.Fatalf("Run = %+v, %v; want an error about the log", res.res, res.err)
		}
		if _, ok := executor.IsFailed(res.err); ok {
			t.Errorf("Run = %v, a FailedError; want an error of the cluster (worth a retry)", res.err)
		}
		c.assertPodDeleted(t, ns, name)
	})

	t.Run("InvalidQuota", func(t *testing.T) {
		e := w.executor(t, nil)
		r := executor.Record{ID: "api-quota", Project: "proj", Pipeline: "pipe"}
		env := setup(t, e, r)
		for _, tc := range []struct {
			name      string
			quota     map[string]string
			env       []string
			resources bool   // ErrInvalidResources
			want      string // in the error
		}{
			// Refused by the executor before any pod is made.
			{"request above limit", map[string]string{"requests.cpu": "2", "limits.cpu": "1"}, nil, true, "requests.cpu (2) is above limits.cpu (1)"},
			// Only the API server's validation refuses these.
			{"no container resource", map[string]string{"requests.gpu": "1"}, nil, true, "must be a standard resource"},
			{"fractional GPU", map[string]string{"limits.nvidia.com/gpu": "0.5"}, nil, true, "must be an integer"},
			{"GPU without limit", map[string]string{"requests.nvidia.com/gpu": "1"}, nil, true, "Limit must be set"},
			{"environment name", nil, []string{"PRÉNOM=Zoé"}, false, "printable ASCII"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := step("quota")
				s.Resources, s.Env = tc.quota, tc.env
				res, err := e.Run(context.Background(), env, s, nil)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Run = %+v, %v; want an error mentioning %q", res, err, tc.want)
				}
				if _, ok := executor.IsFailed(err); !ok {
					t.Errorf("Run = %v, want an executor.FailedError (the project's fault, not worth a retry)", err)
				}
				if got := errors.Is(err, kubernetes.ErrInvalidResources); got != tc.resources {
					t.Errorf("errors.Is(%v, ErrInvalidResources) = %v, want %v", err, got, tc.resources)
				}
				c.assertPodGone(t, ns, kubernetes.StepPodName(r.ID, s.Name))
			})
		}
	})

	t.Run("Teardown", func(t *testing.T) {
		e := w.executor(t, nil)
		ctx := context.Background()
		r := executor.Record{ID: "api-teardown", Project: "proj", Pipeline: "pipe"}
		if _, err := e.Setup(ctx, r); err != nil {
			t.Fatalf("Setup: %v", err)
		}
		s := step("pending")
		name := kubernetes.StepPodName(r.ID, s.Name)
		done := startRun(ctx, e, executor.Environment{Record: r}, s)
		c.awaitPod(t, ns, name, "")
		if err := e.Teardown(ctx, r); err != nil {
			t.Fatalf("Teardown: %v", err)
		}
		res := wait(t, done)
		if res.err == nil || !strings.Contains(res.err.Error(), "deleted by someone else") {
			t.Errorf("Run of a torn down record = %+v, %v; want an error about its deleted pod", res.res, res.err)
		}
		c.assertPodGone(t, ns, name)

		// The claim is protected until no pod uses it: deleted, not yet gone.
		claims := c.admin.CoreV1().PersistentVolumeClaims(ns)
		claim, err := claims.Get(ctx, kubernetes.WorkspaceClaimName(r.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the claim after Teardown: %v", err)
		}
		if claim.DeletionTimestamp == nil {
			t.Fatal("Teardown did not delete the workspace claim")
		}
		if _, err := e.Setup(ctx, r); err == nil || !strings.Contains(err.Error(), "is being deleted") {
			t.Errorf("Setup while the claim is being deleted: %v, want an error saying so", err)
		}
		if err := e.Teardown(ctx, r); err != nil {
			t.Errorf("second Teardown: %v", err)
		}
		// The PVC protection controller releases the claim, which goes.
		if claim, err = claims.Get(ctx, claim.Name, metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		claim.Finalizers = nil
		if _, err := claims.Update(ctx, claim, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := claims.Get(ctx, claim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("claim after its finalizer was removed: %v, want not found", err)
		}
		list, err := e.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range list {
			if in.Record.ID == r.ID {
				t.Errorf("List after Teardown reports %+v", in)
			}
		}
		if err := e.Teardown(ctx, r); err != nil {
			t.Errorf("Teardown of a record with nothing left: %v", err)
		}
	})

	t.Run("Namespaces", func(t *testing.T) {
		const team, other = "team-a", "team-b"
		w.namespace(t, team, true)
		w.namespace(t, other, false) // the worker has no rights there
		e := w.executor(t, nil)
		ctx := context.Background()

		inDefault := executor.Record{ID: "api-default", Project: "proj", Pipeline: "pipe"}
		if _, err := e.Setup(ctx, inDefault); err != nil {
			t.Fatalf("Setup: %v", err)
		}
		inTeam := executor.Record{ID: "api-team", Project: project, Pipeline: "pipe", Namespace: team}
		env, err := e.Setup(ctx, inTeam)
		if err != nil {
			t.Fatalf("Setup in %s: %v", team, err)
		}
		if _, err := c.admin.CoreV1().PersistentVolumeClaims(team).Get(ctx, kubernetes.WorkspaceClaimName(inTeam.ID), metav1.GetOptions{}); err != nil {
			t.Errorf("the claim in %s: %v", team, err)
		}
		// A record in a namespace the worker may not use: refused by RBAC.
		elsewhere := executor.Record{ID: "api-other", Project: "proj", Pipeline: "pipe", Namespace: other}
		if _, err := e.Setup(ctx, elsewhere); !apierrors.IsForbidden(err) {
			t.Errorf("Setup in %s: %v, want forbidden", other, err)
		}
		if err := e.Teardown(ctx, elsewhere); !apierrors.IsForbidden(err) {
			t.Errorf("Teardown in %s: %v, want forbidden", other, err)
		}

		s := step("build")
		s.Stage = "unit test"
		name := kubernetes.StepPodName(inTeam.ID, s.Name)
		log := c.kubelet.script(team, name, "built\n")
		done := startRun(ctx, e, env, s)
		c.awaitPod(t, team, name, "")
		c.bind(t, team, name, testNode)
		c.setStatus(t, team, name, corev1.PodRunning, running())
		log.awaitRequest(t)

		// List: the running pod and the claim of the team's record, with their
		// exact values, and the default namespace's record; the namespace that was
		// refused does not make List fail.
		list, err := e.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		found := map[string]executor.Instance{}
		for _, in := range list {
			found[in.Kind+"/"+in.Record.Namespace+"/"+in.Name] = in
		}
		pod, ok := found[executor.KindPod+"/"+team+"/"+name]
		if !ok {
			t.Errorf("List has no pod %s/%s: %v", team, name, list)
		} else if pod.Record != inTeam || pod.Stage != s.Stage || pod.State != string(corev1.PodRunning) || !pod.Running || pod.Created.IsZero() {
			t.Errorf("List: pod %+v, want record %+v, stage %q, running", pod, inTeam, s.Stage)
		}
		if claim, ok := found[executor.KindVolume+"/"+team+"/"+kubernetes.WorkspaceClaimName(inTeam.ID)]; !ok || claim.Record != inTeam {
			t.Errorf("List: claim of %s: %+v (found %v), want record %+v", inTeam.ID, claim, ok, inTeam)
		}
		recIn := inDefault
		recIn.Namespace = ns
		if claim, ok := found[executor.KindVolume+"/"+ns+"/"+kubernetes.WorkspaceClaimName(inDefault.ID)]; !ok || claim.Record != recIn {
			t.Errorf("List: claim of %s: %+v (found %v), want record %+v", inDefault.ID, claim, ok, recIn)
		}
		for k := range found {
			if strings.Contains(k, "/"+other+"/") {
				t.Errorf("List reports %s", k)
			}
		}

		c.setStatus(t, team, name, corev1.PodSucceeded, terminated(0))
		close(log.end)
		if res := wait(t, done); res.err != nil || res.res.ExitCode != 0 || res.out != "built\n" {
			t.Fatalf("Run in %s = %+v, %q, %v; want exit code 0 with its log", team, res.res, res.out, res.err)
		}
		c.assertPodGone(t, team, name)
		if err := e.Teardown(ctx, pod.Record); err != nil {
			t.Fatalf("Teardown in %s: %v", team, err)
		}
		if claim, err := c.admin.CoreV1().PersistentVolumeClaims(team).Get(ctx, kubernetes.WorkspaceClaimName(inTeam.ID), metav1.GetOptions{}); err != nil || claim.DeletionTimestamp == nil {
			t.Errorf("the claim in %s after Teardown: %v, want it deleted (kept by its finalizer)", team, err)
		}
	})
}
