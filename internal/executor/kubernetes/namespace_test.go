package kubernetes_test

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
)

// claimNames lists the claims of a namespace.
func (f *fixture) claimNames(t *testing.T, namespace string) []string {
	t.Helper()
	list, err := f.cli.CoreV1().PersistentVolumeClaims(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range list.Items {
		out = append(out, c.Name)
	}
	return out
}

// podNames lists the pods of a namespace.
func (f *fixture) podNames(t *testing.T, namespace string) []string {
	t.Helper()
	list, err := f.cli.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return names(list.Items)
}

// A record that names a namespace (its project's or its cloud's) gets its claim and
// every pod there; its teardown deletes them there; List reports it there; a record
// naming none stays in the executor's default namespace.
func TestRecordNamespace(t *testing.T) {
	const team = "team-a"
	f := newFixture(t, nil)
	inTeam := executor.Record{ID: "rec-team", Project: "proj", Pipeline: "pipe", Namespace: team}
	env := f.setup(t, inTeam)
	if env.Record != inTeam {
		t.Fatalf("Setup's environment has record %+v, want %+v (the steps follow its namespace)", env.Record, inTeam)
	}
	claim := kubernetes.WorkspaceClaimName(inTeam.ID)
	if got := f.claimNames(t, team); !slices.Equal(got, []string{claim}) {
		t.Errorf("claims in %s: %v, want [%s]", team, got, claim)
	}
	if got := f.claimNames(t, ns); len(got) != 0 {
		t.Errorf("claims in the default namespace %s: %v, want none", ns, got)
	}
	// Setup again (a retried activity) finds the claim in the record's namespace.
	if again := f.setup(t, inTeam); again != env {
		t.Errorf("second Setup = %+v, want %+v", again, env)
	}

	// A step runs in a pod of the record's namespace, on the claim there.
	s := step("build")
	name := kubernetes.StepPodName(inTeam.ID, s.Name)
	done := f.start(context.Background(), env, s)
	p := f.awaitPodIn(t, team, name, "")
	if p.Namespace != team {
		t.Errorf("pod namespace %q, want %q", p.Namespace, team)
	}
	if v := p.Spec.Volumes; len(v) != 1 || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != claim {
		t.Errorf("pod volumes %+v, want the claim %s", v, claim)
	}
	if got := f.podNames(t, ns); len(got) != 0 {
		t.Errorf("pods in the default namespace %s: %v, want none", ns, got)
	}
	f.setStateIn(t, team, name, corev1.PodSucceeded, terminated(4))
	r := wait(t, done)
	if r.err != nil || r.res.ExitCode != 4 || r.out != fakeLogs {
		t.Fatalf("Run = %+v, %q, %v; want exit code 4 with the pod's log", r.res, r.out, r.err)
	}
	if _, err := f.cli.CoreV1().Pods(team).Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod %s/%s still there after Run (get: %v)", team, name, err)
	}

	// A record without a namespace: the default one.
	f.setup(t, rec)
	if got := f.claimNames(t, ns); !slices.Equal(got, []string{kubernetes.WorkspaceClaimName(rec.ID)}) {
		t.Errorf("claims in the default namespace: %v, want only %s's", got, rec.ID)
	}

	// A pod left running in the record's namespace (its worker died): List finds
	// it with its namespace, beside the default namespace's record.
	left := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "left", Namespace: team, Labels: inTeam.Labels()}}
	if _, err := f.cli.CoreV1().Pods(team).Create(context.Background(), left, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := f.e.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]executor.Record{}
	for _, in := range list {
		found[in.Kind+"/"+in.Name] = in.Record
	}
	recIn := rec
	recIn.Namespace = ns
	want := map[string]executor.Record{
		executor.KindPod + "/left":                                        inTeam,
		executor.KindVolume + "/" + claim:                                 inTeam,
		executor.KindVolume + "/" + kubernetes.WorkspaceClaimName(rec.ID): recIn,
	}
	if len(found) != len(want) {
		t.Errorf("List = %v, want %v", found, want)
	}
	for k, r := range want {
		if found[k] != r {
			t.Errorf("List: %s has record %+v, want %+v", k, found[k], r)
		}
	}

	// Teardown of the listed record (as the reaper does) deletes its objects in its
	// namespace, and leaves the default namespace's record alone.
	if err := f.e.Teardown(context.Background(), found[executor.KindPod+"/left"]); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if got := f.podNames(t, team); len(got) != 0 {
		t.Errorf("pods in %s after Teardown: %v, want none", team, got)
	}
	if got := f.claimNames(t, team); len(got) != 0 {
		t.Errorf("claims in %s after Teardown: %v, want none", team, got)
	}
	if got := f.claimNames(t, ns); len(got) != 1 {
		t.Errorf("claims in the default namespace after the other record's Teardown: %v, want 1", got)
	}
	// The default namespace's record is torn down there.
	if err := f.e.Teardown(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if got := f.claimNames(t, ns); len(got) != 0 {
		t.Errorf("claims in the default namespace after its record's Teardown: %v", got)
	}
}

// A namespace that is no valid name is the project's fault: Setup, Run and Teardown
// refuse it as a FailedError, without creating anything.
func TestRecordNamespaceInvalid(t *testing.T) {
	f := newFixture(t, nil)
	bad := executor.Record{ID: "rec-bad", Project: "proj", Pipeline: "pipe", Namespace: "Team_A"}
	if _, err := f.e.Setup(context.Background(), bad); err == nil {
		t.Fatal("Setup in namespace Team_A succeeded")
	} else if _, ok := executor.IsFailed(err); !ok {
		t.Errorf("Setup: %v, want a FailedError", err)
	}
	if _, err := f.e.Run(context.Background(), executor.Environment{Record: bad}, step("build"), nil); err == nil {
		t.Error("Run in namespace Team_A succeeded")
	} else if _, ok := executor.IsFailed(err); !ok {
		t.Errorf("Run: %v, want a FailedError", err)
	}
	if err := f.e.Teardown(context.Background(), bad); err == nil {
		t.Error("Teardown in namespace Team_A succeeded")
	}
	for _, a := range f.cli.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("%s of %s for a record with an invalid namespace", a.GetVerb(), a.GetResource().Resource)
		}
	}
}
