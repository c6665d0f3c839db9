package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/cycloneci/cyclone/internal/executor/kubernetes"
)

// commandEnvs returns the environment variables of the flags of each command.
func commandEnvs(t *testing.T) map[string]map[string]bool {
	t.Helper()
	var c cli
	k, err := kong.New(&c, kong.Name("cyclone"), kong.DefaultEnvars("CYCLONE"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, cmd := range k.Model.Children {
		envs := map[string]bool{}
		for _, group := range cmd.AllFlags(true) {
			for _, f := range group {
				for _, e := range f.Envs {
					envs[e] = true
				}
			}
		}
		out[cmd.Name] = envs
	}
	return out
}

// TestKubernetesManifestsUseRealFlags checks that every variable the Deployments of
// deploy/kubernetes set is a flag of the command they run, and that the ConfigMap's
// values parse as those flags.
func TestKubernetesManifestsUseRealFlags(t *testing.T) {
	envs := commandEnvs(t)
	files, _ := filepath.Glob("../../deploy/kubernetes/*.yaml")
	var (
		deployments []*appsv1.Deployment
		config      *corev1.ConfigMap
	)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
			if err != nil {
				continue // the kustomization; deploy/kubernetes's own test decodes everything
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				deployments = append(deployments, o)
			case *corev1.ConfigMap:
				config = o
			}
		}
	}
	if len(deployments) != 2 || config == nil {
		t.Fatalf("found %d Deployments and ConfigMap %v in deploy/kubernetes, want server, worker and cyclone-config", len(deployments), config)
	}
	for _, d := range deployments {
		c := d.Spec.Template.Spec.Containers[0]
		if len(c.Args) != 1 || envs[c.Args[0]] == nil {
			t.Errorf("%s runs %q, not a cyclone command", d.Name, c.Args)
			continue
		}
		cmd := c.Args[0]
		var args []string
		for _, e := range c.Env {
			if !envs[cmd][e.Name] {
				t.Errorf("%s sets %s, which is no flag of cyclone %s", d.Name, e.Name, cmd)
			}
			if ref := e.ValueFrom; ref != nil && ref.ConfigMapKeyRef != nil {
				flag := "--" + strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(e.Name, "CYCLONE_")), "_", "-")
				args = append(args, flag+"="+config.Data[ref.ConfigMapKeyRef.Key])
			}
		}
		// The ConfigMap's values parse (enums, numbers, maps) as the command's flags.
		var parsed cli
		k, err := kong.New(&parsed, kong.Name("cyclone"), kong.Exit(func(int) { t.Fatalf("cyclone %s exited", cmd) }))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Parse(append([]string{cmd}, args...)); err != nil {
			t.Errorf("cyclone %s %s: %v", cmd, strings.Join(args, " "), err)
		}
		if cmd == "worker" {
			if parsed.Worker.Executor != "kubernetes" || parsed.Worker.KubeNamespace != "cyclone-worker" ||
				parsed.Worker.KubeDefaultQuota["limits.memory"] != "2Gi" || parsed.Worker.WorkerID == "" {
				t.Errorf("worker flags from the ConfigMap: %+v %+v", parsed.Worker.workerFlags, parsed.Worker.kubeFlags)
			}
			cfg, err := kubeExecutorConfig(parsed.Worker.kubeFlags)
			if err == nil {
				cfg.Client = fake.NewClientset()
				_, err = kubernetes.New(cfg)
			}
			if err != nil {
				t.Errorf("the ConfigMap's kubernetes executor settings: %v", err)
			}
		}
	}
}
