package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/store"
)

// storedClouds plays the store: clouds by name, one secret set for all, and the
// names looked up.
type storedClouds struct {
	clouds map[string]*model.Cloud
	read   []string
}

func (s *storedClouds) GetCloud(_ context.Context, name string) (*model.Cloud, error) {
	s.read = append(s.read, name)
	if c, ok := s.clouds[name]; ok {
		return c, nil
	}
	return nil, store.ErrNotFound
}

func (s *storedClouds) CloudSecrets(*model.Cloud) (*model.CloudSecrets, error) {
	return &model.CloudSecrets{BearerToken: "tok", CAData: []byte("-----BEGIN CERTIFICATE-----")}, nil
}

func kubeCloud(name, host, namespace string) *model.Cloud {
	return &model.Cloud{Name: name, Type: model.CloudKubernetes, Kubernetes: &model.KubernetesCloud{Host: host, Namespace: namespace}}
}

func notInCluster() (*rest.Config, error) { return nil, rest.ErrNotInCluster }

// A worker serving a Kubernetes cloud, without --kubeconfig and outside a cluster,
// reaches the cloud's cluster with its stored credentials and defaults to its
// namespace; the flags and the in-cluster configuration come first.
func TestKubeExecutorFromTheServedCloud(t *testing.T) {
	ctx := context.Background()
	clouds := &storedClouds{clouds: map[string]*model.Cloud{
		"k8s":    kubeCloud("k8s", "https://127.0.0.1:6443", "cloud-ns"),
		"docker": {Name: "docker", Type: model.CloudDocker, Docker: &model.DockerCloud{Host: "tcp://127.0.0.1:2375"}},
	}}
	served := []string{"docker", "gone", "k8s"}

	cfg, err := kubeExecutorSetup(ctx, kubeFlags{}, clouds, served, notInCluster)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.RESTConfig
	if r == nil || r.Host != "https://127.0.0.1:6443" || r.BearerToken != "tok" || r.Timeout != 0 {
		t.Fatalf("REST config %+v, want the cloud's host and token, no overall timeout", r)
	}
	if cfg.Namespace != "cloud-ns" {
		t.Errorf("namespace %q, want the cloud's cloud-ns", cfg.Namespace)
	}

	cfg, err = kubeExecutorSetup(ctx, kubeFlags{KubeNamespace: "flag-ns"}, clouds, served, notInCluster)
	if err != nil || cfg.Namespace != "flag-ns" || cfg.RESTConfig.Host != "https://127.0.0.1:6443" {
		t.Errorf("with --kube-namespace: %+v, %v; want flag-ns on the cloud's cluster", cfg, err)
	}

	pod := &rest.Config{Host: "https://10.0.0.1:443"}
	inPod := func() (*rest.Config, error) { return pod, nil }
	cfg, err = kubeExecutorSetup(ctx, kubeFlags{}, clouds, served, inPod)
	if err != nil || cfg.RESTConfig != pod || cfg.Namespace != "cloud-ns" {
		t.Errorf("in a pod: %+v, %v; want the in-cluster config and the cloud's namespace", cfg, err)
	}

	// Everything given: the clouds are not read.
	clouds.read = nil
	if _, err := kubeExecutorSetup(ctx, kubeFlags{KubeNamespace: "flag-ns"}, clouds, served, inPod); err != nil || len(clouds.read) != 0 {
		t.Errorf("with the flags and a pod: %v, clouds read %v", err, clouds.read)
	}
}

func TestKubeExecutorWithoutACluster(t *testing.T) {
	ctx := context.Background()
	clouds := &storedClouds{clouds: map[string]*model.Cloud{
		"a":     kubeCloud("a", "https://127.0.0.1:6443", "ns-a"),
		"b":     kubeCloud("b", "https://127.0.0.2:6443", "ns-b"),
		"guard": kubeCloud("guard", "https://169.254.169.254", "ns"),
	}}
	_, err := kubeExecutorSetup(ctx, kubeFlags{KubeNamespace: "ns"}, clouds, []string{"gone"}, notInCluster)
	if err == nil || !strings.Contains(err.Error(), "--cloud") {
		t.Errorf("no cluster at all: %v, want an error naming --cloud", err)
	}
	_, err = kubeExecutorSetup(ctx, kubeFlags{}, clouds, []string{"a", "b"}, notInCluster)
	if err == nil || !strings.Contains(err.Error(), "several Kubernetes clouds") {
		t.Errorf("two Kubernetes clouds: %v, want an error", err)
	}
	_, err = kubeExecutorSetup(ctx, kubeFlags{}, clouds, []string{"guard"}, notInCluster)
	if !errors.Is(err, scm.ErrBadURL) {
		t.Errorf("a cloud on a metadata address: %v, want ErrBadURL", err)
	}
	pod := func() (*rest.Config, error) { return &rest.Config{Host: "https://10.0.0.1"}, nil }
	_, err = kubeExecutorSetup(ctx, kubeFlags{}, clouds, nil, pod)
	if err == nil || !strings.Contains(err.Error(), "--kube-namespace") {
		t.Errorf("no namespace: %v, want an error naming --kube-namespace", err)
	}
}
