package main

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
)

// kubeFlags configure the kubernetes executor of `cyclone worker --executor kubernetes`.
type kubeFlags struct {
	Kubeconfig          string            `help:"Kubeconfig file of the cluster running steps (--executor kubernetes); empty: the in-cluster configuration of the worker's pod." type:"path"`
	KubeNamespace       string            `help:"Namespace of the records' pods and workspace claims (--executor kubernetes). Required with it."`
	KubeStorageClass    string            `help:"Storage class of the workspace claims (empty: the cluster's default)."`
	KubeWorkspaceSize   string            `help:"Storage requested by a record's workspace claim." default:"1Gi"`
	KubeAccessMode      string            `help:"Access mode of the workspace claims: ReadWriteOnce (a record's pods kept on one node) or ReadWriteMany." enum:"ReadWriteOnce,ReadWriteMany" default:"ReadWriteOnce"`
	KubeImagePullPolicy string            `help:"Image pull policy of the steps' containers (empty: the cluster's default)." enum:",Always,IfNotPresent,Never" default:""`
	KubeDefaultQuota    map[string]string `help:"Resources of a step where the project's worker quota is silent, e.g. requests.cpu=250m;limits.memory=2Gi."`
}

// newKubernetesExecutor makes the kubernetes executor from the flags.
func newKubernetesExecutor(f kubeFlags) (executor.Executor, string, error) {
	ex, err := kubeExecutor(f)
	if err != nil {
		return nil, "", err
	}
	return ex, "kubernetes", nil
}

func kubeExecutor(f kubeFlags) (*kubernetes.Executor, error) {
	cfg, err := kubeExecutorConfig(f)
	if err != nil {
		return nil, err
	}
	if f.Kubeconfig == "" {
		cfg.RESTConfig, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubernetes executor: not in a cluster's pod and no --kubeconfig: %w", err)
		}
	} else if cfg.RESTConfig, err = clientcmd.BuildConfigFromFlags("", f.Kubeconfig); err != nil {
		return nil, fmt.Errorf("kubernetes executor: kubeconfig %s: %w", f.Kubeconfig, err)
	}
	return kubernetes.New(cfg)
}

// kubeExecutorConfig is the executor's configuration from the flags, without a
// client.
func kubeExecutorConfig(f kubeFlags) (kubernetes.Config, error) {
	if f.KubeNamespace == "" {
		return kubernetes.Config{}, errors.New("--kube-namespace (CYCLONE_KUBE_NAMESPACE) is required with --executor kubernetes")
	}
	return kubernetes.Config{
		Namespace:           f.KubeNamespace,
		DefaultResources:    f.KubeDefaultQuota,
		ImagePullPolicy:     corev1.PullPolicy(f.KubeImagePullPolicy),
		StorageClass:        f.KubeStorageClass,
		WorkspaceSize:       f.KubeWorkspaceSize,
		WorkspaceAccessMode: corev1.PersistentVolumeAccessMode(f.KubeAccessMode),
	}, nil
}
