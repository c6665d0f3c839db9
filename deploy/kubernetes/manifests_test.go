// Package kubernetes_test checks the Kubernetes manifests of this directory: they
// decode with client-go's scheme, the worker's RBAC is limited to what the Kubernetes
// executor needs in the records' namespace, and all configuration comes from the
// ConfigMap and the Secret. (cmd/cyclone checks that the variables are flags.)
package kubernetes_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

type manifests struct {
	namespaces   []*corev1.Namespace
	configMaps   []*corev1.ConfigMap
	secrets      []*corev1.Secret
	accounts     []*corev1.ServiceAccount
	services     []*corev1.Service
	deployments  map[string]*appsv1.Deployment
	roles        []*rbacv1.Role
	roleBindings []*rbacv1.RoleBinding
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// load decodes every document of the kustomization's resources, failing on anything
// the scheme does not know or that is not expected here.
func load(t *testing.T) *manifests {
	t.Helper()
	var kust struct {
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob("*.yaml")
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	slices.Sort(kust.Resources)
	if !reflect.DeepEqual(kust.Resources, files) {
		t.Fatalf("kustomization.yaml lists %v, the directory has %v", kust.Resources, files)
	}

	m := &manifests{deployments: map[string]*appsv1.Deployment{}}
	decode := scheme.Codecs.UniversalDeserializer()
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSep.Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, gvk, err := decode.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s, document %d: %v", f, i+1, err)
			}
			checkStrict(t, f, doc, obj)
			switch o := obj.(type) {
			case *corev1.Namespace:
				m.namespaces = append(m.namespaces, o)
			case *corev1.ConfigMap:
				m.configMaps = append(m.configMaps, o)
			case *corev1.Secret:
				m.secrets = append(m.secrets, o)
			case *corev1.ServiceAccount:
				m.accounts = append(m.accounts, o)
			case *corev1.Service:
				m.services = append(m.services, o)
			case *appsv1.Deployment:
				m.deployments[o.Name] = o
			case *rbacv1.Role:
				m.roles = append(m.roles, o)
			case *rbacv1.RoleBinding:
				m.roleBindings = append(m.roleBindings, o)
			default:
				t.Errorf("%s, document %d: unexpected %s (nothing cluster-wide beyond the namespaces)", f, i+1, gvk)
			}
		}
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// checkStrict fails on fields of the YAML that the typed object does not have (a
// typo in a field name decodes silently otherwise).
func checkStrict(t *testing.T, file, doc string, obj runtime.Object) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		t.Errorf("%s: unknown or misspelt field: %v", file, err)
	}
}

func (m *manifests) configMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	if len(m.configMaps) != 1 || len(m.secrets) != 1 {
		t.Fatalf("%d ConfigMaps and %d Secrets, want one each", len(m.configMaps), len(m.secrets))
	}
	return m.configMaps[0]
}

func (m *manifests) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	d := m.deployments[name]
	if d == nil {
		t.Fatalf("no Deployment %s", name)
	}
	return d
}

func TestNamespaces(t *testing.T) {
	m := load(t)
	var names []string
	for _, n := range m.namespaces {
		names = append(names, n.Name)
	}
	if want := []string{"cyclone", "cyclone-worker"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("namespaces %v, want %v", names, want)
	}
	var metas []metav1.ObjectMeta
	for _, c := range m.configMaps {
		metas = append(metas, c.ObjectMeta)
	}
	for _, s := range m.secrets {
		metas = append(metas, s.ObjectMeta)
	}
	for _, d := range m.deployments {
		metas = append(metas, d.ObjectMeta)
	}
	for _, s := range m.services {
		metas = append(metas, s.ObjectMeta)
	}
	for _, a := range m.accounts {
		metas = append(metas, a.ObjectMeta)
	}
	for _, o := range metas {
		if o.Namespace != "cyclone" {
			t.Errorf("%s is in namespace %q, want cyclone", o.Name, o.Namespace)
		}
	}
}

func TestWorkerRBACIsLimitedToPodsInTheWorkerNamespace(t *testing.T) {
	m := load(t)
	cm := m.configMap(t)
	workerNS := cm.Data["CYCLONE_KUBE_NAMESPACE"]
	if workerNS != "cyclone-worker" {
		t.Fatalf("CYCLONE_KUBE_NAMESPACE = %q, want cyclone-worker", workerNS)
	}
	if len(m.roles) != 1 || len(m.roleBindings) != 1 || len(m.accounts) != 1 {
		t.Fatalf("%d Roles, %d RoleBindings, %d ServiceAccounts; want one each", len(m.roles), len(m.roleBindings), len(m.accounts))
	}
	role, rb, sa := m.roles[0], m.roleBindings[0], m.accounts[0]
	if role.Namespace != workerNS || rb.Namespace != workerNS {
		t.Errorf("Role in %q and RoleBinding in %q, want both in the records' namespace %q", role.Namespace, rb.Namespace, workerNS)
	}
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"create", "get", "list", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"persistentvolumeclaims"}, Verbs: []string{"create", "get", "list", "delete"}},
	}
	if !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("Role rules %+v,\nwant exactly %+v", role.Rules, want)
	}
	for _, r := range role.Rules {
		if len(r.ResourceNames) != 0 || len(r.NonResourceURLs) != 0 || slices.Contains(r.Verbs, "*") {
			t.Errorf("rule %+v is broader than needed", r)
		}
	}
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name}) {
		t.Errorf("RoleBinding refers to %+v, want the Role %s", rb.RoleRef, role.Name)
	}
	wantSubject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}
	if !reflect.DeepEqual(rb.Subjects, wantSubject) {
		t.Errorf("RoleBinding subjects %+v, want %+v", rb.Subjects, wantSubject)
	}
	if got := m.deployment(t, "cyclone-worker").Spec.Template.Spec.ServiceAccountName; got != sa.Name {
		t.Errorf("worker runs as service account %q, want %q", got, sa.Name)
	}
	server := m.deployment(t, "cyclone-server").Spec.Template.Spec
	if server.ServiceAccountName != "" || server.AutomountServiceAccountToken == nil || *server.AutomountServiceAccountToken {
		t.Errorf("the server needs no Kubernetes API access: service account %q, automount %v", server.ServiceAccountName, server.AutomountServiceAccountToken)
	}
}

func TestConfigComesFromConfigMapAndSecret(t *testing.T) {
	m := load(t)
	cm, secret := m.configMap(t), m.secrets[0]
	for _, name := range []string{"CYCLONE_SECRET_KEY", "CYCLONE_ADMIN_TOKEN", "CYCLONE_MONGO_URI"} {
		if _, ok := secret.StringData[name]; !ok {
			t.Errorf("Secret %s has no %s", secret.Name, name)
		}
		if _, ok := cm.Data[name]; ok {
			t.Errorf("ConfigMap %s holds the secret %s", cm.Name, name)
		}
	}
	for key := range cm.Data {
		if !strings.HasPrefix(key, "CYCLONE_") {
			t.Errorf("ConfigMap key %s is not a CYCLONE_* variable", key)
		}
		if strings.Contains(key, "TOKEN") || strings.Contains(key, "SECRET") || strings.Contains(key, "PASSWORD") {
			t.Errorf("ConfigMap key %s looks secret", key)
		}
	}
	if cm.Data["CYCLONE_EXECUTOR"] != "kubernetes" {
		t.Errorf("CYCLONE_EXECUTOR = %q, want kubernetes", cm.Data["CYCLONE_EXECUTOR"])
	}
	for _, name := range []string{"cyclone-server", "cyclone-worker"} {
		d := m.deployment(t, name)
		for _, c := range d.Spec.Template.Spec.Containers {
			if len(c.EnvFrom) != 0 {
				t.Errorf("%s/%s: envFrom hides which variables are used: list them", name, c.Name)
			}
			for _, e := range c.Env {
				switch {
				case e.Value != "" || e.ValueFrom == nil:
					t.Errorf("%s/%s: %s has a literal value", name, c.Name, e.Name)
				case e.ValueFrom.ConfigMapKeyRef != nil:
					ref := e.ValueFrom.ConfigMapKeyRef
					if _, ok := cm.Data[ref.Key]; ref.Name != cm.Name || !ok || ref.Key != e.Name {
						t.Errorf("%s/%s: %s from ConfigMap %s key %s, which the ConfigMap %s does not have under that name", name, c.Name, e.Name, ref.Name, ref.Key, cm.Name)
					}
				case e.ValueFrom.SecretKeyRef != nil:
					ref := e.ValueFrom.SecretKeyRef
					if _, ok := secret.StringData[ref.Key]; ref.Name != secret.Name || !ok || ref.Key != e.Name {
						t.Errorf("%s/%s: %s from Secret %s key %s, which the Secret %s does not have under that name", name, c.Name, e.Name, ref.Name, ref.Key, secret.Name)
					}
				default:
					t.Errorf("%s/%s: %s comes from neither the ConfigMap nor the Secret", name, c.Name, e.Name)
				}
			}
		}
	}
	// What each command needs.
	needs := map[string][]string{
		"cyclone-server": {"CYCLONE_TEMPORAL_ADDRESS", "CYCLONE_MONGO_URI", "CYCLONE_SECRET_KEY", "CYCLONE_ADMIN_TOKEN"},
		"cyclone-worker": {"CYCLONE_TEMPORAL_ADDRESS", "CYCLONE_MONGO_URI", "CYCLONE_SECRET_KEY", "CYCLONE_EXECUTOR", "CYCLONE_KUBE_NAMESPACE", "CYCLONE_WORKER_ID"},
	}
	for name, vars := range needs {
		c := m.deployment(t, name).Spec.Template.Spec.Containers[0]
		for _, v := range vars {
			if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == v }) {
				t.Errorf("%s lacks %s", name, v)
			}
		}
	}
	if c := m.deployment(t, "cyclone-worker").Spec.Template.Spec.Containers[0]; slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "CYCLONE_ADMIN_TOKEN" }) {
		t.Error("the worker gets the admin token it does not need")
	}
}

func TestDeployments(t *testing.T) {
	m := load(t)
	for name, args := range map[string][]string{"cyclone-server": {"server"}, "cyclone-worker": {"worker"}} {
		d := m.deployment(t, name)
		tpl := d.Spec.Template
		if d.Spec.Selector == nil || !reflect.DeepEqual(tpl.Labels["app.kubernetes.io/name"], d.Spec.Selector.MatchLabels["app.kubernetes.io/name"]) || tpl.Labels["app.kubernetes.io/name"] != name {
			t.Errorf("%s: selector %v does not select its pods %v", name, d.Spec.Selector, tpl.Labels)
		}
		psc := tpl.Spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: pod security context %+v does not run as non-root", name, psc)
		}
		if len(tpl.Spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(tpl.Spec.Containers))
		}
		c := tpl.Spec.Containers[0]
		if c.Image != "cyclone:latest" || !reflect.DeepEqual(c.Args, args) || len(c.Command) != 0 {
			t.Errorf("%s: image %q command %q args %q, want cyclone:latest (its entrypoint) with %q", name, c.Image, c.Command, c.Args, args)
		}
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
			!reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s: container security context %+v", name, sc)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: resources %+v lack a CPU request or a memory limit", name, c.Resources)
		}
	}

	// The server: probes on its health routes, reachable through the Service.
	c := m.deployment(t, "cyclone-server").Spec.Template.Spec.Containers[0]
	probe := func(p *corev1.Probe) string {
		if p == nil || p.HTTPGet == nil {
			return ""
		}
		return p.HTTPGet.Path + " on " + p.HTTPGet.Port.String()
	}
	if got := probe(c.ReadinessProbe); got != "/readyz on http" {
		t.Errorf("readiness probe %q, want /readyz on http", got)
	}
	if got := probe(c.LivenessProbe); got != "/healthz on http" {
		t.Errorf("liveness probe %q, want /healthz on http", got)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("server ports %+v, want http 8080 (the default --listen)", c.Ports)
	}
	if len(m.services) != 1 {
		t.Fatalf("%d Services, want 1", len(m.services))
	}
	svc := m.services[0]
	if svc.Spec.Selector["app.kubernetes.io/name"] != "cyclone-server" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service %s: selector %v ports %+v, want the server's http port", svc.Name, svc.Spec.Selector, svc.Spec.Ports)
	}

	// The worker: one identity per Deployment, moved with Recreate.
	w := m.deployment(t, "cyclone-worker")
	if w.Spec.Replicas == nil || *w.Spec.Replicas != 1 || w.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("worker replicas %v strategy %q, want 1 with Recreate (one CYCLONE_WORKER_ID per Deployment)", w.Spec.Replicas, w.Spec.Strategy.Type)
	}
}
