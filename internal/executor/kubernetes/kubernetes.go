// Package kubernetes is an executor.Executor that runs every step of a pipeline record
// in its own pod on a Kubernetes cluster, through k8s.io/client-go.
//
// # Workspace
//
// Setup creates a PersistentVolumeClaim per record (WorkspaceClaimName, storage class,
// size and access mode from Config), and every step's pod mounts it at
// executor.WorkspaceMount: the stages of a record share their files through it. With
// the default ReadWriteOnce access mode the pods of a record carry a required pod
// affinity on their record label with the node as topology, so that the tasks of a
// stage running at once land on the node where the volume is attached (the first pod
// of a record may go anywhere); a ReadWriteMany storage class lifts that constraint.
//
// The workspace is therefore not on the worker's file system: Setup returns an
// Environment whose Workspace is "" (and whose Network is "": the pods of a cluster
// share its network). Whatever the worker would write into the workspace, the code
// checkout first of all, must be done by a step running in the cluster: the checkout
// stage runs git in a step pod (an image with git, the commands `git init`, `git
// fetch`, `git checkout` on executor.WorkspaceMount, the credentials in the step's
// environment, never in its command) and reads the commit back from that step's
// output (e.g. `git log -1 --format=...`), instead of running git on the worker.
//
// # Steps
//
// Run creates the pod StepPodName(record, step), after deleting a leftover of that name
// from a crashed attempt: one container "step" with the step's image, command (which
// replaces the image's entrypoint), environment (plus WORKSPACE) and working
// directory, restart policy Never, no service account token, and the resources of the
// project's worker quota (Config.DefaultResources overridden key by key by
// executor.Step.Resources). It waits for the container to start, follows its log into
// out, waits for it to terminate and returns its exit code; the pod is deleted before
// Run returns, and when ctx is cancelled, which kills the step. An invalid quota and an
// image that cannot be pulled are executor.FailedErrors (the pipeline's fault, not
// worth a retry), and so is a pod that the API server's validation refuses (422
// Invalid: the pod is made of the step, so a retry is refused the same way; e.g. a
// quota naming a resource that containers cannot request, or a fractional GPU, which
// only the API server checks; ErrInvalidResources when the refusal is about the
// resources); other errors are the cluster's. Every "$" of the command and of the
// environment's values is doubled, so that the kubelet's $(VAR) expansion gives them
// back as written. Pod states are polled (Config.PollInterval) rather than watched:
// nothing to re-establish when a watch expires, and a step's start and end are not
// latency-critical.
//
// # Namespaces
//
// A record's claim and pods are in its executor.Record.Namespace (the project's
// worker.location.namespace, else its cloud's), or in Config.Namespace when it names
// none; Setup's Environment carries the record, so its steps and its teardown go to the
// same namespace. List covers Config.Namespace and every namespace where this executor
// has found or created a record's objects since it started (or listed them for a
// teardown): a namespace whose API calls were refused (the worker has no rights
// there, or it does not exist) is not listed, so that one misconfigured project does
// not make List fail for every record.
//
// Everything created carries the record's labels (executor.Record.Labels, made valid
// label values; the exact values are in annotations of the same keys), which is how
// Teardown and List (executor.Lister) find them.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cycloneci/cyclone/internal/executor"
)

const (
	// containerName is the name of the one container of a step's pod.
	containerName = "step"
	// volumeName is the name of the workspace volume in a step's pod.
	volumeName = "workspace"
	// cleanupTimeout bounds the API calls that clean up after a step, which use a
	// context of their own since the step's may be cancelled.
	cleanupTimeout = 30 * time.Second
	// deleteGracePeriod is the grace period of a step's pod when it is deleted: long
	// enough for the kubelet to kill it properly, short enough for an abort.
	deleteGracePeriod = int64(1)
)

// Defaults of Config.
const (
	DefaultWorkspaceSize = "1Gi"
	DefaultPollInterval  = 500 * time.Millisecond
	DefaultStartTimeout  = 10 * time.Minute
)

// Config says where and how the executor makes pods.
type Config struct {
	// Client talks to the cluster. When nil, a clientset is made from RESTConfig
	// (rest.InClusterConfig in a pod, or clientcmd for a kubeconfig).
	Client     kubernetes.Interface
	RESTConfig *rest.Config
	// Namespace holds the pods and claims of the records that name no namespace of
	// their own (executor.Record.Namespace). Required.
	Namespace string
	// DefaultResources sizes a step whose quota leaves a key out, with the keys of a
	// worker quota ("requests.cpu": "500m", "limits.memory": "2Gi", ...).
	DefaultResources map[string]string
	// ImagePullPolicy of the steps' containers; "" leaves the cluster's default
	// (Always for :latest images, IfNotPresent otherwise).
	ImagePullPolicy corev1.PullPolicy
	// StorageClass of the workspace claims; "" uses the cluster's default class.
	StorageClass string
	// WorkspaceSize is the storage requested by a workspace claim (default 1Gi).
	WorkspaceSize string
	// WorkspaceAccessMode of the workspace claims (default ReadWriteOnce, with pod
	// affinity keeping a record's pods on one node; see the package documentation).
	WorkspaceAccessMode corev1.PersistentVolumeAccessMode
	// ServiceAccount runs the steps' pods ("" is the namespace's default). Its token
	// is never mounted.
	ServiceAccount string
	// PollInterval is how often a pod's state is read while waiting (default 500ms).
	PollInterval time.Duration
	// StartTimeout bounds how long a step's pod may stay unstarted (not scheduled,
	// claim not bound, image pulling) before Run gives up (default 10 minutes).
	StartTimeout time.Duration
}

// Executor runs steps in pods. The zero value is not usable; call New.
type Executor struct {
	cli       kubernetes.Interface
	ns        string
	defaults  map[string]string
	pull      corev1.PullPolicy
	class     string
	size      resource.Quantity
	mode      corev1.PersistentVolumeAccessMode
	sa        string
	poll      time.Duration
	startWait time.Duration

	// used holds the namespaces other than ns that records were set up, run or torn
	// down in, for List.
	mu   sync.Mutex
	used map[string]bool
}

var _ executor.Executor = (*Executor)(nil)

// New checks cfg and returns an executor using it.
func New(cfg Config) (*Executor, error) {
	if cfg.Namespace == "" {
		return nil, errors.New("kubernetes executor: no namespace")
	}
	if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) != 0 {
		return nil, fmt.Errorf("kubernetes executor: namespace %q: %s", cfg.Namespace, strings.Join(errs, "; "))
	}
	if _, err := ParseResources(cfg.DefaultResources); err != nil {
		return nil, fmt.Errorf("kubernetes executor: default resources: %w", err)
	}
	switch cfg.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return nil, fmt.Errorf("kubernetes executor: image pull policy %q is not Always, IfNotPresent or Never", cfg.ImagePullPolicy)
	}
	sizeText := cfg.WorkspaceSize
	if sizeText == "" {
		sizeText = DefaultWorkspaceSize
	}
	size, err := resource.ParseQuantity(sizeText)
	if err != nil || size.Sign() <= 0 {
		return nil, fmt.Errorf("kubernetes executor: workspace size %q is not a positive quantity", sizeText)
	}
	mode := cfg.WorkspaceAccessMode
	switch mode {
	case "":
		mode = corev1.ReadWriteOnce
	case corev1.ReadWriteOnce, corev1.ReadWriteMany, corev1.ReadWriteOncePod:
	default:
		return nil, fmt.Errorf("kubernetes executor: workspace access mode %q is not ReadWriteOnce, ReadWriteMany or ReadWriteOncePod", mode)
	}
	cli := cfg.Client
	if cli == nil {
		if cfg.RESTConfig == nil {
			return nil, errors.New("kubernetes executor: neither a client nor a REST config")
		}
		if cli, err = kubernetes.NewForConfig(cfg.RESTConfig); err != nil {
			return nil, fmt.Errorf("kubernetes executor: client: %w", err)
		}
	}
	e := &Executor{
		cli: cli, ns: cfg.Namespace, defaults: maps.Clone(cfg.DefaultResources), pull: cfg.ImagePullPolicy,
		class: cfg.StorageClass, size: size, mode: mode, sa: cfg.ServiceAccount,
		poll: cfg.PollInterval, startWait: cfg.StartTimeout, used: map[string]bool{},
	}
	if e.poll <= 0 {
		e.poll = DefaultPollInterval
	}
	if e.startWait <= 0 {
		e.startWait = DefaultStartTimeout
	}
	return e, nil
}

func checkRecord(id string) error {
	if id == "" {
		return errors.New("kubernetes executor: empty record ID")
	}
	return nil
}

// namespace is where the record's objects are: its own namespace, else the default.
// A namespace that is no valid name is the project's fault (FailedError).
func (e *Executor) namespace(rec executor.Record) (string, error) {
	ns := rec.Namespace
	if ns == "" || ns == e.ns {
		return e.ns, nil
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) != 0 {
		return "", executor.Failed("kubernetes executor: record %s: namespace %q is not a valid namespace name: %s", rec.ID, ns, strings.Join(errs, "; "))
	}
	return ns, nil
}

// use remembers ns for List, once the API server has accepted a call about a
// record's objects there (not before: List must not fail on a namespace the worker
// may not read, which would stop the reaping of every record).
func (e *Executor) use(ns string) {
	if ns == e.ns {
		return
	}
	e.mu.Lock()
	e.used[ns] = true
	e.mu.Unlock()
}

// namespaces are the namespaces List covers: the default one first, then the others
// used so far, sorted.
func (e *Executor) namespaces() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string{e.ns}, slices.Sorted(maps.Keys(e.used))...)
}

// Setup creates (or finds again) the record's workspace claim. The Environment has no
// Workspace directory and no Network (see the package documentation).
func (e *Executor) Setup(ctx context.Context, rec executor.Record) (executor.Environment, error) {
	if err := checkRecord(rec.ID); err != nil {
		return executor.Environment{}, err
	}
	ns, err := e.namespace(rec)
	if err != nil {
		return executor.Environment{}, err
	}
	name := WorkspaceClaimName(rec.ID)
	claims := e.cli.CoreV1().PersistentVolumeClaims(ns)
	check := func(pvc *corev1.PersistentVolumeClaim) error {
		if pvc.Labels[executor.LabelRecord] != labelValue(rec.ID) {
			return fmt.Errorf("kubernetes executor: claim %s/%s exists but is not labelled for record %s", ns, name, rec.ID)
		}
		if pvc.DeletionTimestamp != nil {
			return fmt.Errorf("kubernetes executor: claim %s/%s is being deleted (record %s torn down?)", ns, name, rec.ID)
		}
		return nil
	}
	env := executor.Environment{Record: rec}
	pvc, err := claims.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		e.use(ns)
		return env, check(pvc)
	}
	if !apierrors.IsNotFound(err) {
		return executor.Environment{}, fmt.Errorf("kubernetes executor: get claim %s/%s: %w", ns, name, err)
	}
	labels, annotations := metadata(rec)
	pvc = &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{e.mode},
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: e.size},
			},
		},
	}
	if e.class != "" {
		pvc.Spec.StorageClassName = &e.class
	}
	created, err := claims.Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsAlreadyExists(err) { // created concurrently by another attempt
			if again, err2 := claims.Get(ctx, name, metav1.GetOptions{}); err2 == nil {
				e.use(ns)
				return env, check(again)
			}
		}
		return executor.Environment{}, fmt.Errorf("kubernetes executor: create claim %s/%s: %w", ns, name, err)
	}
	e.use(ns)
	return env, check(created)
}

// Teardown deletes the record's pods (running or not) and workspace claim, in the
// record's namespace. What does not exist is skipped; the other deletions are tried
// even when one fails.
func (e *Executor) Teardown(ctx context.Context, rec executor.Record) error {
	if err := checkRecord(rec.ID); err != nil {
		return err
	}
	ns, err := e.namespace(rec)
	if err != nil {
		return err
	}
	sel := metav1.ListOptions{LabelSelector: recordSelector(rec.ID)}
	var errs []error
	pods, err := e.cli.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		errs = append(errs, fmt.Errorf("list pods: %w", err))
	} else {
		e.use(ns)
		for _, p := range pods.Items {
			if err := e.deletePod(ctx, ns, p.Name, p.UID); err != nil {
				errs = append(errs, err)
			}
		}
	}
	claims := e.cli.CoreV1().PersistentVolumeClaims(ns)
	names := []string{WorkspaceClaimName(rec.ID)}
	if list, err := claims.List(ctx, sel); err != nil {
		errs = append(errs, fmt.Errorf("list claims: %w", err))
	} else {
		for _, c := range list.Items {
			if !slices.Contains(names, c.Name) {
				names = append(names, c.Name)
			}
		}
	}
	for _, name := range names {
		if err := claims.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete claim %s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kubernetes executor: teardown of record %s in namespace %s: %w", rec.ID, ns, err)
	}
	return nil
}

var _ executor.Lister = (*Executor)(nil)

// List returns the step pods (running or not) and workspace claims that carry
// Cyclone's record labels, whichever worker made them, in the default namespace and
// in the others this executor has used (see the package documentation). Records and
// stages are reported with their exact values (from the annotations), each record with
// its namespace, where Teardown finds it again.
func (e *Executor) List(ctx context.Context) ([]executor.Instance, error) {
	opts := metav1.ListOptions{LabelSelector: executor.LabelManaged + "=true"}
	var out []executor.Instance
	for _, ns := range e.namespaces() {
		pods, err := e.cli.CoreV1().Pods(ns).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("kubernetes executor: list pods in %s: %w", ns, err)
		}
		claims, err := e.cli.CoreV1().PersistentVolumeClaims(ns).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("kubernetes executor: list claims in %s: %w", ns, err)
		}
		for _, p := range pods.Items {
			out = append(out, executor.Instance{
				Kind: executor.KindPod, Name: p.Name, Record: recordOf(p.ObjectMeta), Stage: exact(p.ObjectMeta, executor.LabelStage),
				State: string(p.Status.Phase), Running: p.Status.Phase == corev1.PodRunning, Created: p.CreationTimestamp.UTC(),
			})
		}
		for _, c := range claims.Items {
			out = append(out, executor.Instance{
				Kind: executor.KindVolume, Name: c.Name, Record: recordOf(c.ObjectMeta), Created: c.CreationTimestamp.UTC(),
			})
		}
	}
	return out, nil
}

// exact is the value of a record label of an object: the annotation holding it
// exactly, else the label.
func exact(m metav1.ObjectMeta, key string) string {
	if v, ok := m.Annotations[key]; ok {
		return v
	}
	return m.Labels[key]
}

func recordOf(m metav1.ObjectMeta) executor.Record {
	return executor.Record{
		ID: exact(m, executor.LabelRecord), Project: exact(m, executor.LabelProject), Pipeline: exact(m, executor.LabelPipeline),
		Namespace: m.Namespace,
	}
}

// workingDir is the container path of a step's WorkDir, which must stay inside the
// workspace.
func workingDir(rel string) (string, error) {
	if rel == "" || rel == "." {
		return executor.WorkspaceMount, nil
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("kubernetes executor: work dir %q is not inside the workspace", rel)
	}
	return path.Join(executor.WorkspaceMount, filepath.ToSlash(rel)), nil
}

// literal escapes s from the kubelet's $(VAR) expansion of commands and environment
// values: "$$" stands for "$", so every "$" doubled comes out as it was.
func literal(s string) string {
	return strings.ReplaceAll(s, "$", "$$")
}

// stepEnv is the step's environment: Step.Env ("KEY" alone is an empty value), then
// WORKSPACE (which a step cannot override).
func stepEnv(env []string) []corev1.EnvVar {
	out := make([]corev1.EnvVar, 0, len(env)+1)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" || k == "WORKSPACE" {
			continue
		}
		out = append(out, corev1.EnvVar{Name: k, Value: literal(v)})
	}
	return append(out, corev1.EnvVar{Name: "WORKSPACE", Value: executor.WorkspaceMount})
}

// stepPod is the pod running step, in namespace ns.
func (e *Executor) stepPod(ns, name string, rec executor.Record, step executor.Step, wd string, res corev1.ResourceRequirements) *corev1.Pod {
	labels, annotations := metadata(rec)
	labels[executor.LabelStage] = labelValue(step.Stage)
	annotations[executor.LabelStage] = step.Stage
	labels[LabelStep] = labelValue(step.Name)
	annotations[LabelStep] = step.Name
	command := make([]string, len(step.Command))
	for i, a := range step.Command {
		command[i] = literal(a)
	}
	no := false
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			ServiceAccountName:           e.sa,
			AutomountServiceAccountToken: &no,
			EnableServiceLinks:           &no,
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           step.Image,
				ImagePullPolicy: e.pull,
				Command:         command,
				Env:             stepEnv(step.Env),
				WorkingDir:      wd,
				Resources:       res,
				VolumeMounts:    []corev1.VolumeMount{{Name: volumeName, MountPath: executor.WorkspaceMount}},
			}},
			Volumes: []corev1.Volume{{
				Name: volumeName,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
					ClaimName: WorkspaceClaimName(rec.ID),
				}},
			}},
		},
	}
	if e.mode != corev1.ReadWriteMany {
		pod.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
					executor.LabelManaged: "true",
					executor.LabelRecord:  labelValue(rec.ID),
				}},
				TopologyKey: corev1.LabelHostname,
			}},
		}}
	}
	return pod
}

// Run runs the step in a new pod, in the namespace of env's record, and copies its
// log to out. The pod is deleted before Run returns.
func (e *Executor) Run(ctx context.Context, env executor.Environment, step executor.Step, out io.Writer) (executor.Result, error) {
	fail := func(format string, a ...any) (executor.Result, error) {
		return executor.Result{}, fmt.Errorf("kubernetes executor: step %q: "+format, append([]any{step.Name}, a...)...)
	}
	if step.Name == "" {
		return executor.Result{}, errors.New("kubernetes executor: step has no name")
	}
	if err := checkRecord(env.Record.ID); err != nil {
		return executor.Result{}, err
	}
	ns, err := e.namespace(env.Record)
	if err != nil {
		return executor.Result{}, err
	}
	if len(step.Command) == 0 || step.Command[0] == "" {
		return fail("no command")
	}
	if step.Image == "" {
		return fail("no image")
	}
	wd, err := workingDir(step.WorkDir)
	if err != nil {
		return executor.Result{}, err
	}
	res, err := ParseResources(mergeQuota(e.defaults, step.Resources))
	if err != nil {
		// The project's quota is at fault: a retry would fail the same way.
		return executor.Result{}, executor.Failed("kubernetes executor: step %q: %w", step.Name, err)
	}
	if err := ctx.Err(); err != nil {
		return fail("not started: %w", err)
	}
	if out == nil {
		out = io.Discard
	}
	pods := e.cli.CoreV1().Pods(ns)
	name := StepPodName(env.Record.ID, step.Name)

	// A pod of the same name is a leftover of a crashed attempt.
	if err := e.deletePodAndWait(ctx, ns, name); err != nil {
		if ctx.Err() != nil {
			return fail("cancelled: %w", ctx.Err())
		}
		return fail("delete leftover pod %s: %w", name, err)
	}

	// Clean-up calls must work when ctx is cancelled.
	cleanup := func(uid types.UID) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		_ = e.deletePod(cctx, ns, name, uid)
	}
	created, err := pods.Create(ctx, e.stepPod(ns, name, env.Record, step, wd, res), metav1.CreateOptions{})
	if err != nil {
		if ctx.Err() != nil {
			cleanup("")
			return fail("cancelled: %w", ctx.Err())
		}
		if apierrors.IsInvalid(err) {
			// The API server's validation refused the pod, which is made of the step:
			// a retry would be refused the same way.
			if refusesResources(err) {
				err = fmt.Errorf("%w: %w", ErrInvalidResources, err)
			}
			return executor.Result{}, executor.Failed("kubernetes executor: step %q: the API server refused pod %s/%s: %w", step.Name, ns, name, err)
		}
		return fail("create pod %s/%s: %w", ns, name, err)
	}
	e.use(ns)
	defer cleanup(created.UID)

	state, err := e.waitStarted(ctx, ns, name, created.UID)
	if err != nil {
		if ctx.Err() != nil {
			return fail("cancelled: %w", ctx.Err())
		}
		return fail("%w", err)
	}
	if t := state.Terminated; t != nil {
		if code, ok := startExitCode(t); ok {
			// The command cannot run: a result of the step, not worth a retry.
			fmt.Fprintf(out, "cyclone: cannot run %q: %s\n", step.Command[0], t.Message)
			return executor.Result{ExitCode: code}, nil
		}
	}
	if err := e.followLog(ctx, ns, name, out); err != nil {
		if ctx.Err() != nil {
			return fail("cancelled: %w", ctx.Err())
		}
		return fail("%w", err)
	}
	t, err := e.waitTerminated(ctx, ns, name, created.UID)
	if err != nil {
		if ctx.Err() != nil {
			return fail("cancelled: %w", ctx.Err())
		}
		return fail("%w", err)
	}
	return executor.Result{ExitCode: int(t.ExitCode)}, nil
}

// refusesResources reports whether an Invalid error of the API server names the step
// container's resources among its causes.
func refusesResources(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, c := range status.Status().Details.Causes {
		if strings.HasPrefix(c.Field, "spec.containers[0].resources") {
			return true
		}
	}
	return false
}

// deletePod deletes the pod ns/name, if it is still the one of uid ("": any).
func (e *Executor) deletePod(ctx context.Context, ns, name string, uid types.UID) error {
	grace := deleteGracePeriod
	bg := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{GracePeriodSeconds: &grace, PropagationPolicy: &bg}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := e.cli.CoreV1().Pods(ns).Delete(ctx, name, opts)
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case uid != "" && apierrors.IsConflict(err): // already replaced by another pod of that name
		return nil
	}
	return fmt.Errorf("delete pod %s/%s: %w", ns, name, err)
}

// deletePodAndWait deletes the pod ns/name if it exists and waits until it is gone,
// so that a pod of that name can be created again.
func (e *Executor) deletePodAndWait(ctx context.Context, ns, name string) error {
	pods := e.cli.CoreV1().Pods(ns)
	p, err := pods.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	if err := e.deletePod(ctx, ns, name, p.UID); err != nil {
		return err
	}
	deadline := time.Now().Add(cleanupTimeout + time.Duration(deleteGracePeriod)*time.Second)
	for {
		_, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("get pod %s/%s: %w", ns, name, err)
		case time.Now().After(deadline):
			return fmt.Errorf("pod %s/%s still there after it was deleted", ns, name)
		}
		if err := e.sleep(ctx); err != nil {
			return err
		}
	}
}

func (e *Executor) sleep(ctx context.Context) error {
	t := time.NewTimer(e.poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// getStep returns the pod and the state of its step container, checking that the pod
// is still the one Run created.
func (e *Executor) getStep(ctx context.Context, ns, name string, uid types.UID) (*corev1.Pod, corev1.ContainerState, error) {
	p, err := e.cli.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && p.UID != uid) {
		return nil, corev1.ContainerState{}, fmt.Errorf("pod %s/%s was deleted by someone else (record torn down?)", ns, name)
	}
	if err != nil {
		return nil, corev1.ContainerState{}, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == containerName {
			return p, s.State, nil
		}
	}
	return p, corev1.ContainerState{}, nil
}

// imageFault are the reasons of a waiting container whose image cannot be had (an
// ErrImagePull is retried by the kubelet and becomes an ImagePullBackOff).
var imageFault = map[string]bool{
	"ImagePullBackOff":  true,
	"InvalidImageName":  true,
	"ErrImageNeverPull": true,
}

// fatalWaiting are the other reasons of a waiting container that will not start by
// itself.
var fatalWaiting = map[string]bool{
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
}

// waitStarted waits until the step's container runs or has terminated.
func (e *Executor) waitStarted(ctx context.Context, ns, name string, uid types.UID) (corev1.ContainerState, error) {
	deadline := time.Now().Add(e.startWait)
	why := "not scheduled yet"
	for {
		p, state, err := e.getStep(ctx, ns, name, uid)
		if err != nil {
			return corev1.ContainerState{}, err
		}
		if state.Running != nil || state.Terminated != nil {
			return state, nil
		}
		if w := state.Waiting; w != nil {
			if imageFault[w.Reason] {
				// The step's image cannot be had: the pipeline's fault.
				return corev1.ContainerState{}, executor.Failed("pod %s/%s cannot start: %s: %s", ns, name, w.Reason, w.Message)
			}
			if fatalWaiting[w.Reason] {
				return corev1.ContainerState{}, fmt.Errorf("pod %s/%s cannot start: %s: %s", ns, name, w.Reason, w.Message)
			}
			why = w.Reason + ": " + w.Message
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return corev1.ContainerState{}, fmt.Errorf("pod %s/%s ended without running its step: %s %s", ns, name, p.Status.Reason, p.Status.Message)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				why = c.Reason + ": " + c.Message
			}
		}
		if time.Now().After(deadline) {
			return corev1.ContainerState{}, fmt.Errorf("pod %s/%s not started after %s (%s)", ns, name, e.startWait, why)
		}
		if err := e.sleep(ctx); err != nil {
			return corev1.ContainerState{}, err
		}
	}
}

// waitTerminated waits until the step's container has terminated.
func (e *Executor) waitTerminated(ctx context.Context, ns, name string, uid types.UID) (*corev1.ContainerStateTerminated, error) {
	for {
		p, state, err := e.getStep(ctx, ns, name, uid)
		if err != nil {
			return nil, err
		}
		if state.Terminated != nil {
			return state.Terminated, nil
		}
		if state.Running == nil && (p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded) {
			return nil, fmt.Errorf("pod %s/%s ended without a step exit code: %s %s", ns, name, p.Status.Reason, p.Status.Message)
		}
		if err := e.sleep(ctx); err != nil {
			return nil, err
		}
	}
}

// maxLogReconnects bounds how often a broken log stream is followed again.
const maxLogReconnects = 5

// followLog copies the step container's log to out until the container ends. The
// kubelet ends a followed log cleanly when the container terminates; a stream that
// breaks instead is followed again from the time it broke (at the API's one-second
// precision, so a line may repeat).
func (e *Executor) followLog(ctx context.Context, ns, name string, out io.Writer) error {
	opts := &corev1.PodLogOptions{Container: containerName, Follow: true}
	for attempt := 0; ; attempt++ {
		rc, err := e.cli.CoreV1().Pods(ns).GetLogs(name, opts).Stream(ctx)
		if err != nil {
			return fmt.Errorf("follow log of pod %s/%s: %w", ns, name, err)
		}
		_, err = io.Copy(out, rc)
		broke := time.Now()
		_ = rc.Close()
		if err == nil || ctx.Err() != nil || attempt == maxLogReconnects {
			return nil // a log cut short is not worth failing the step for
		}
		since := metav1.NewTime(broke)
		opts = &corev1.PodLogOptions{Container: containerName, Follow: true, SinceTime: &since}
	}
}

// startExitCode recognises a container that could not start because its command
// cannot be executed and maps that to a shell's exit codes, as the docker executor
// does: 127 for a command that does not exist, 126 for one that cannot be executed.
func startExitCode(t *corev1.ContainerStateTerminated) (int, bool) {
	if t.Reason != "StartError" && t.Reason != "ContainerCannotRun" {
		return 0, false
	}
	switch msg := t.Message; {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return 127, true
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "is a directory"):
		return 126, true
	}
	return 0, false
}
