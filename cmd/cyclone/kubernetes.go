package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cycloneci/cyclone/internal/cloud"
	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// kubeFlags configure the kubernetes executor of `cyclone worker --executor kubernetes`.
type kubeFlags struct {
	Kubeconfig          string            `help:"Kubeconfig file of the cluster running steps (--executor kubernetes); empty: the in-cluster configuration of the worker's pod, else the host and credentials of the Kubernetes cloud the worker serves (--cloud)." type:"path"`
	KubeNamespace       string            `help:"Namespace of the pods and workspace claims of records whose project names none (--executor kubernetes); empty: the namespace of the Kubernetes cloud the worker serves (--cloud)."`
	KubeStorageClass    string            `help:"Storage class of the workspace claims (empty: the cluster's default)."`
	KubeWorkspaceSize   string            `help:"Storage requested by a record's workspace claim." default:"1Gi"`
	KubeAccessMode      string            `help:"Access mode of the workspace claims: ReadWriteOnce (a record's pods kept on one node) or ReadWriteMany." enum:"ReadWriteOnce,ReadWriteMany" default:"ReadWriteOnce"`
	KubeImagePullPolicy string            `help:"Image pull policy of the steps' containers (empty: the cluster's default)." enum:",Always,IfNotPresent,Never" default:""`
	KubeDefaultQuota    map[string]string `help:"Resources of a step where the project's worker quota is silent, e.g. requests.cpu=250m;limits.memory=2Gi."`
}

// kubeClouds reads the clouds a worker serves and opens their secrets (the store).
type kubeClouds interface {
	GetCloud(ctx context.Context, name string) (*model.Cloud, error)
	cloud.Secrets
}

// newKubernetesExecutor makes the kubernetes executor from the flags and, where they
// leave the cluster or the namespace out, from the Kubernetes cloud among served.
func newKubernetesExecutor(ctx context.Context, f kubeFlags, clouds kubeClouds, served []string) (executor.Executor, string, error) {
	cfg, err := kubeExecutorSetup(ctx, f, clouds, served, rest.InClusterConfig)
	if err != nil {
		return nil, "", err
	}
	ex, err := kubernetes.New(cfg)
	if err != nil {
		return nil, "", err
	}
	return ex, "kubernetes", nil
}

// kubeExecutorSetup is the executor's configuration. The cluster is --kubeconfig's,
// else the in-cluster one (inCluster), else the stored host and credentials of the
// Kubernetes cloud the worker serves; the default namespace is --kube-namespace, else
// that cloud's. The clouds are read only when the flags and the pod leave something out.
func kubeExecutorSetup(ctx context.Context, f kubeFlags, clouds kubeClouds, served []string, inCluster func() (*rest.Config, error)) (kubernetes.Config, error) {
	var (
		restCfg      *rest.Config
		inClusterErr error
		err          error
	)
	if f.Kubeconfig != "" {
		if restCfg, err = clientcmd.BuildConfigFromFlags("", f.Kubeconfig); err != nil {
			return kubernetes.Config{}, fmt.Errorf("kubernetes executor: kubeconfig %s: %w", f.Kubeconfig, err)
		}
	} else {
		restCfg, inClusterErr = inCluster()
	}
	if restCfg == nil || f.KubeNamespace == "" {
		c, err := servedKubeCloud(ctx, clouds, served)
		if err != nil {
			return kubernetes.Config{}, err
		}
		if restCfg == nil {
			if c == nil {
				return kubernetes.Config{}, fmt.Errorf("kubernetes executor: no --kubeconfig, not in a cluster's pod (%v), and no Kubernetes cloud among --cloud", inClusterErr)
			}
			if restCfg, err = cloud.ExecutorRESTConfig(ctx, c, clouds); err != nil {
				return kubernetes.Config{}, fmt.Errorf("kubernetes executor: cloud %s: %w", c.Name, err)
			}
		}
		if f.KubeNamespace == "" && c != nil {
			f.KubeNamespace = c.Kubernetes.Namespace
		}
	}
	cfg, err := kubeExecutorConfig(f)
	if err != nil {
		return kubernetes.Config{}, err
	}
	cfg.RESTConfig = restCfg
	return cfg, nil
}

// servedKubeCloud is the one Kubernetes cloud among the clouds the worker serves (nil
// when there is none; a name that is not stored is skipped). One executor reaches one
// cluster: several Kubernetes clouds need the flags.
func servedKubeCloud(ctx context.Context, clouds kubeClouds, served []string) (*model.Cloud, error) {
	if clouds == nil {
		return nil, nil
	}
	var found []*model.Cloud
	var names []string
	for _, name := range served {
		if name == "" || slices.Contains(names, name) {
			continue
		}
		c, err := clouds.GetCloud(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes executor: read cloud %s: %w", name, err)
		}
		if c.Type == model.CloudKubernetes && c.Kubernetes != nil {
			found = append(found, c)
			names = append(names, name)
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("kubernetes executor: the worker serves several Kubernetes clouds (%s): give --kubeconfig and --kube-namespace", strings.Join(names, ", "))
}

// kubeExecutorConfig is the executor's configuration from the flags, without a
// client.
func kubeExecutorConfig(f kubeFlags) (kubernetes.Config, error) {
	if f.KubeNamespace == "" {
		return kubernetes.Config{}, errors.New("--kube-namespace (CYCLONE_KUBE_NAMESPACE) is required with --executor kubernetes, unless the worker serves a Kubernetes cloud (--cloud), whose namespace it takes")
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
