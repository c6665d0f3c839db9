//go:build linux

package kubernetes_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// This file runs a Kubernetes control plane for the tests of apiserver_test.go: Debian's
// etcd (package etcd-server) and the upstream kube-apiserver, built from the Go module
// proxy by scripts/test-deps.sh (tools/kube-apiserver), both on loopback ports with
// their data in the test's temporary directory. It has no scheduler, no controller
// manager and no kubelet: pods are never scheduled nor run by themselves. The tests
// play those parts where they need progress, the way a real cluster's components would
// (a Binding for the scheduler, the pod's status subresource and final deletion for the
// kubelet, a claim's finalizer for the PVC protection controller), and a fakeKubelet
// answers the container log requests that the API server forwards to a node.

// kubeAPIServerBinary is the name under which scripts/test-deps.sh builds the API server.
const kubeAPIServerBinary = "kube-apiserver-cyclone"

// adminToken authenticates the test itself (group system:masters) through the API
// server's static token file; the executor runs with a service account's token.
const adminToken = "cyclone-test-admin-token"

// testNode is the node the tests' pods are bound to; the fakeKubelet serves its logs.
const testNode = "node-1"

// cluster is a running API server, with an admin client and the fakeKubelet of testNode.
type cluster struct {
	// base is the API server's address and CA, without credentials.
	base    *rest.Config
	admin   clientset.Interface
	kubelet *fakeKubelet
}

// findProgram returns the path of program, looked up in PATH and then in dirs. A
// missing program fails the test (never skips it), which goes on to report the others.
func findProgram(t *testing.T, program string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(program); err == nil {
		return p
	}
	for _, d := range dirs {
		p := filepath.Join(d, program)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Errorf("%s is not in PATH nor in %v: `make test-deps` (scripts/test-deps.sh) installs it", program, dirs)
	return ""
}

// goBinDirs are the bin directories of GOPATH, where scripts/test-deps.sh builds the
// API server.
func goBinDirs(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		t.Fatalf("go env GOPATH: %v", err)
	}
	var dirs []string
	for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	return dirs
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a server started for a test.
type process struct {
	name   string
	log    string
	exited chan struct{} // closed when the process has ended
	err    error         // its exit status, once exited is closed
}

// startProcess starts path with args, its output in a log file of dir. The process is
// killed when the test ends (and when the test binary dies), and the end of its log is
// shown if the test failed.
func startProcess(t *testing.T, dir, name, path string, args ...string) *process {
	t.Helper()
	p := &process{name: name, log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s's log (%s), last lines:\n%s", name, p.log, tail(p.log, 30))
		}
	})
	return p
}

// tail returns the last n lines of the file.
func tail(file string, n int) string {
	f, err := os.Open(file)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// waitFor calls ready until it says true, failing the test when p exits first or
// after timeout.
func waitFor(t *testing.T, p *process, timeout time.Duration, what string, ready func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := ready()
		if ok {
			return
		}
		last = err
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before %s; its log:\n%s", p.name, p.err, what, tail(p.log, 30))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s (last error: %v)", what, timeout, last)
		}
	}
}

// startEtcd runs the etcd program on loopback ports and returns its client URL.
func startEtcd(t *testing.T, dir, etcd string) string {
	t.Helper()
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	p := startProcess(t, dir, "etcd", etcd,
		"--name", "test",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "test="+peerURL,
		"--logger", "zap", "--log-outputs", "stderr")
	waitFor(t, p, 30*time.Second, "etcd health", func() (bool, error) {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`)), fmt.Errorf("%s: %s", resp.Status, body)
	})
	return clientURL
}

// writePEM writes one PEM block to a new file of dir and returns its path.
func writePEM(t *testing.T, dir, name, blockType string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startCluster runs etcd and the API server (with a node whose kubelet is a
// fakeKubelet) until the test ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	etcd := findProgram(t, "etcd", "/usr/bin") // Debian's etcd-server
	apiserver := findProgram(t, kubeAPIServerBinary, goBinDirs(t)...)
	if t.Failed() {
		t.FailNow()
	}
	dir := t.TempDir()
	etcdURL := startEtcd(t, dir, etcd)
	kubelet := newFakeKubelet(t)

	// The key pair of service account tokens: the executor authenticates with a
	// token requested for the worker's service account, as it does in a pod.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	signingKey := writePEM(t, dir, "sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	verifyKey := writePEM(t, dir, "sa.pub", "PUBLIC KEY", pub)
	kubeletCA := writePEM(t, dir, "kubelet-ca.crt", "CERTIFICATE", kubelet.srv.Certificate().Raw)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+`,cyclone-test-admin,cyclone-test-admin,"system:masters"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certDir := filepath.Join(dir, "certs")
	port := freePort(t)
	p := startProcess(t, dir, "kube-apiserver", apiserver,
		"--etcd-servers", etcdURL,
		// Loopback only, and advertised there so that nothing depends on the host's
		// interfaces (the API server then logs that the endpoints of its own
		// "kubernetes" Service cannot be a loopback address: unused here).
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(port),
		"--cert-dir", certDir, // a self-signed serving certificate and its CA
		"--token-auth-file", tokens,
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file", signingKey,
		"--service-account-key-file", verifyKey,
		"--service-cluster-ip-range", "10.0.0.0/24",
		// Logs are forwarded to the node's kubelet: the fakeKubelet, on loopback.
		"--kubelet-preferred-address-types", "InternalIP",
		"--kubelet-certificate-authority", kubeletCA,
		"--profiling=false",
	)

	// The serving certificate's file also holds the CA that signed it.
	caFile := filepath.Join(certDir, "apiserver.crt")
	waitFor(t, p, 60*time.Second, "serving certificate", func() (bool, error) {
		_, err := os.Stat(caFile)
		return err == nil, err
	})
	base := &rest.Config{
		Host:            fmt.Sprintf("https://127.0.0.1:%d", port),
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		QPS:             -1, // no client-side rate limit: the executor polls fast here
	}
	c := &cluster{base: base, kubelet: kubelet}
	admin := c.config(adminToken)
	if c.admin, err = clientset.NewForConfig(admin); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, 60*time.Second, "API server ready", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		body, err := c.admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", err
	})
	c.addNode(t)
	return c
}

// config is the API server's config with a bearer token.
func (c *cluster) config(token string) *rest.Config {
	cfg := rest.CopyConfig(c.base)
	cfg.BearerToken = token
	return cfg
}

// addNode registers testNode, with the fakeKubelet's address and port.
func (c *cluster) addNode(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	node, err := c.admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node: %v", err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(c.kubelet.port)
	if _, err := c.admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update node status: %v", err)
	}
}

// bind plays the scheduler: the pod goes to node.
func (c *cluster) bind(t *testing.T, namespace, pod, node string) {
	t.Helper()
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: namespace},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}
	if err := c.admin.CoreV1().Pods(namespace).Bind(context.Background(), b, metav1.CreateOptions{}); err != nil {
		t.Fatalf("bind pod %s/%s to %s: %v", namespace, pod, node, err)
	}
}

// setStatus plays the kubelet: it writes the phase and the step container's state
// into the pod's status subresource.
func (c *cluster) setStatus(t *testing.T, namespace, name string, phase corev1.PodPhase, state corev1.ContainerState) {
	t.Helper()
	ctx := context.Background()
	p, err := c.admin.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod: %v", err)
	}
	p.Status.Phase = phase
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "step", Image: p.Spec.Containers[0].Image, ImageID: "docker.io/library/busybox@sha256:0000",
		State: state, Ready: state.Running != nil,
	}}
	if _, err := c.admin.CoreV1().Pods(namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status of pod %s/%s: %v", namespace, name, err)
	}
}

// awaitPod waits for the pod to exist (and not be the one of notUID).
func (c *cluster) awaitPod(t *testing.T, namespace, name string, notUID string) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, err := c.admin.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && (notUID == "" || string(p.UID) != notUID) {
			return p
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("get pod: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s/%s never created", namespace, name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeKubelet answers the API server's requests for container logs
// (/containerLogs/NAMESPACE/POD/CONTAINER) of testNode with what a test scripted.
type fakeKubelet struct {
	srv  *httptest.Server
	port int

	mu   sync.Mutex
	logs map[string]*podLog // by namespace/pod
}

// podLog is what the fakeKubelet serves as a pod's log: output, then the end of the
// stream when end is closed (as a kubelet ends a followed log when the container
// terminates).
type podLog struct {
	output   string
	end      chan struct{}
	requests chan *http.Request // each request, as it arrives
	// abandoned is closed when a request was cancelled by the API server (its
	// client went away) before end was closed.
	abandoned chan struct{}
	once      sync.Once
}

func newFakeKubelet(t *testing.T) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{logs: map[string]*podLog{}}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	k.srv.StartTLS()
	t.Cleanup(k.srv.Close)
	k.port = k.srv.Listener.Addr().(*net.TCPAddr).Port
	return k
}

// script sets the log of a pod.
func (k *fakeKubelet) script(namespace, pod, output string) *podLog {
	l := &podLog{output: output, end: make(chan struct{}), requests: make(chan *http.Request, 16), abandoned: make(chan struct{})}
	k.mu.Lock()
	k.logs[namespace+"/"+pod] = l
	k.mu.Unlock()
	return l
}

func (k *fakeKubelet) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
	if !strings.HasPrefix(r.URL.Path, "/containerLogs/") || len(parts) != 3 {
		http.NotFound(w, r)
		return
	}
	k.mu.Lock()
	l := k.logs[parts[0]+"/"+parts[1]]
	k.mu.Unlock()
	if l == nil || parts[2] != "step" {
		http.Error(w, fmt.Sprintf("container %q in pod %s/%s not found", parts[2], parts[0], parts[1]), http.StatusNotFound)
		return
	}
	select {
	case l.requests <- r:
	default:
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, l.output)
	w.(http.Flusher).Flush()
	select {
	case <-l.end:
	case <-r.Context().Done():
		l.once.Do(func() { close(l.abandoned) })
	}
}

// awaitRequest waits for a log request of the pod.
func (l *podLog) awaitRequest(t *testing.T) *http.Request {
	t.Helper()
	select {
	case r := <-l.requests:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("the API server never asked the kubelet for the step's log")
		return nil
	}
}
