package cloud_test

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/cycloneci/cyclone/internal/cloud"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
)

type secrets struct{ s model.CloudSecrets }

func (s secrets) CloudSecrets(*model.Cloud) (*model.CloudSecrets, error) { return &s.s, nil }

func pod(ns, name string, rec executor.Record, phase corev1.PodPhase, created time.Time) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: rec.Labels(), CreationTimestamp: metav1.NewTime(created)},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func TestKubernetesWorkers(t *testing.T) {
	created := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	rec1 := executor.Record{ID: "r1", Project: "demo", Pipeline: "web"}
	rec2 := executor.Record{ID: "r2", Project: "demo", Pipeline: "api"}
	unlabelled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "cyclone-worker", Name: "someone-else"}}
	cs := fake.NewClientset(
		pod("cyclone-worker", "cyclone-r1-unittest", rec1, corev1.PodRunning, created),
		pod("other", "cyclone-r2-package", rec2, corev1.PodPending, created),
		unlabelled,
	)
	var got *rest.Config
	p := &cloud.Prober{
		Secrets: secrets{model.CloudSecrets{BearerToken: "tok", CAData: []byte("-----BEGIN CERTIFICATE-----")}},
		NewKubeClient: func(cfg *rest.Config) (kubernetes.Interface, error) {
			got = cfg
			return cs, nil
		},
	}
	c := &model.Cloud{Name: "k8s", Type: model.CloudKubernetes, Kubernetes: &model.KubernetesCloud{
		Host: "https://127.0.0.1:6443", Namespace: "cyclone-worker", TLSClientConfig: &model.TLSClientConfig{CAFile: "/ca.crt"},
	}}
	ctx := context.Background()

	list, err := p.Workers(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Host != "https://127.0.0.1:6443" || got.BearerToken != "tok" || string(got.CAData) != "-----BEGIN CERTIFICATE-----" || got.CAFile != "/ca.crt" {
		t.Fatalf("client config %+v", got)
	}
	want := model.WorkerInstance{Name: "cyclone-r1-unittest", Status: "Running", CreationTime: created, LastUpdateTime: created,
		ProjectName: "demo", PipelineName: "web", RecordID: "r1"}
	if len(list) != 1 || list[0] != want {
		t.Fatalf("workers of the cloud's namespace: %+v", list)
	}
	list, err = p.Workers(ctx, c, "other")
	if err != nil || len(list) != 1 || list[0].RecordID != "r2" || list[0].Status != "Pending" || list[0].PipelineName != "api" {
		t.Fatalf("workers of namespace other: %+v %v", list, err)
	}
	if err := p.Ping(ctx, c); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func TestPingGuardsHosts(t *testing.T) {
	p := &cloud.Prober{NewKubeClient: func(*rest.Config) (kubernetes.Interface, error) {
		t.Fatal("a client was made for a refused host")
		return nil, nil
	}}
	for _, c := range []*model.Cloud{
		{Name: "d", Type: model.CloudDocker, Docker: &model.DockerCloud{Host: "tcp://169.254.169.254:2375"}},
		{Name: "k", Type: model.CloudKubernetes, Kubernetes: &model.KubernetesCloud{Host: "https://169.254.169.254", Namespace: "ns"}},
	} {
		if err := p.Ping(context.Background(), c); !errors.Is(err, scm.ErrBadURL) {
			t.Fatalf("ping of %s: %v, want ErrBadURL", c.Name, err)
		}
	}
}

func TestWorkersFromInstances(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	r1 := executor.Record{ID: "r1", Project: "p", Pipeline: "a"}
	r2 := executor.Record{ID: "r2", Project: "p", Pipeline: "b"}
	got := cloud.Workers([]executor.Instance{
		{Kind: executor.KindNetwork, Name: "cyclone-r1", Record: r1, Created: t0},
		{Kind: executor.KindVolume, Name: "cyclone-r1", Record: r1, Created: t0},
		{Kind: executor.KindContainer, Name: "cyclone-r1-unitTest", Record: r1, State: "running", Running: true, Created: t0.Add(2 * time.Second)},
		{Kind: executor.KindContainer, Name: "cyclone-r1-package", Record: r1, State: "exited", Created: t0.Add(3 * time.Second)},
		{Kind: executor.KindNetwork, Name: "cyclone-r2", Record: r2, Created: t0.Add(time.Second)},
	})
	var names, statuses []string
	for _, w := range got {
		names = append(names, w.Name)
		statuses = append(statuses, w.Status)
	}
	if len(got) != 3 || names[0] != "cyclone-r2" || statuses[0] != "Idle" || names[1] != "cyclone-r1-unitTest" || statuses[1] != "Running" ||
		names[2] != "cyclone-r1-package" || statuses[2] != "Exited" || got[0].PipelineName != "b" {
		t.Fatalf("workers %v %v", names, statuses)
	}
}
