package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/internal/testenv"
)

// buildBinary compiles cyclone once for the tests of this package.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cyclone")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type devProcess struct {
	cmd    *exec.Cmd
	apiURL string
	stderr *bytes.Buffer
	banner string
}

// startDev runs `cyclone dev` and waits for its banner.
func startDev(t *testing.T, bin, dataDir string, addrs map[string]string) *devProcess {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--data-dir", dataDir, "--listen", addrs["api"],
		"--temporal-address", addrs["temporal"], "--ui-address", addrs["ui"], "--mongo-address", addrs["mongo"],
		"--executor", "local")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var banner strings.Builder
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("cyclone dev exited before it was ready:\n%s\n%s", banner.String(), stderr.String())
			}
			banner.WriteString(line + "\n")
			if tok, ok := strings.CutPrefix(strings.TrimSpace(line), "API token:"); ok {
				apiToken = strings.TrimSpace(tok)
			}
			if strings.HasPrefix(line, "Press Ctrl-C") {
				go func() {
					for range lines {
					}
				}()
				return &devProcess{cmd: cmd, apiURL: "http://" + addrs["api"], stderr: &stderr, banner: banner.String()}
			}
		case <-timeout:
			t.Fatalf("cyclone dev not ready:\n%s\n%s", banner.String(), stderr.String())
		}
	}
}

// stop sends Ctrl-C and expects a clean exit.
func (d *devProcess) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cyclone dev did not exit cleanly: %v\n%s", err, d.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("cyclone dev did not stop on Ctrl-C")
	}
}

// apiToken is the API token of the cyclone process under test.
var apiToken string

func request(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func TestDevKeepsDataAcrossRestarts(t *testing.T) {
	bin := buildBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	addrs := map[string]string{"api": freeAddr(t), "temporal": freeAddr(t), "ui": freeAddr(t), "mongo": freeAddr(t)}

	dev := startDev(t, bin, dataDir, addrs)
	for _, want := range []string{"http://" + addrs["api"] + "/api/v1", addrs["temporal"], "http://" + addrs["ui"]} {
		if !strings.Contains(dev.banner, want) {
			t.Fatalf("banner does not show %s:\n%s", want, dev.banner)
		}
	}
	if status, _ := request(t, "GET", "http://"+addrs["ui"]+"/", ""); status != http.StatusOK {
		t.Fatalf("Temporal UI answered %d", status)
	}
	// The token is checked against the SCM when the project is saved: a loopback GitHub.
	gh := testenv.StartGitHub(t, "glpat-kept-secret")
	body := `{"name":"kept","scm":{"type":"github","server":"` + gh.URL + `","username":"bot","token":"glpat-kept-secret"}}`
	if status, data := request(t, "POST", dev.apiURL+"/api/v1/projects", body); status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, data)
	}
	// A pipeline run before the restart is still there after it.
	pipeline := `{"name":"p","build":{"builderImage":{"image":"x"},"stages":{"unitTest":{"command":["echo hi"]}}}}`
	if status, data := request(t, "POST", dev.apiURL+"/api/v1/projects/kept/pipelines", pipeline); status != http.StatusCreated {
		t.Fatalf("create pipeline: %d %s", status, data)
	}
	status, data := request(t, "POST", dev.apiURL+"/api/v1/projects/kept/pipelines/p/records", `{"ref":"master"}`)
	if status != http.StatusCreated {
		t.Fatalf("create record: %d %s", status, data)
	}
	var rec struct{ ID, Status string }
	_ = json.Unmarshal(data, &rec)
	waitRecord(t, dev.apiURL+"/api/v1/projects/kept/pipelines/p/records/"+rec.ID, "Success")

	// A record in flight when dev stops carries on after the restart.
	slow := `{"name":"slow","build":{"builderImage":{"image":"x"},"stages":{"unitTest":{"command":["sleep 2","echo done"]},"package":{"command":["echo packaged"]}}}}`
	if status, data := request(t, "POST", dev.apiURL+"/api/v1/projects/kept/pipelines", slow); status != http.StatusCreated {
		t.Fatalf("create pipeline: %d %s", status, data)
	}
	status, data = request(t, "POST", dev.apiURL+"/api/v1/projects/kept/pipelines/slow/records", `{"ref":"master"}`)
	if status != http.StatusCreated {
		t.Fatalf("create record: %d %s", status, data)
	}
	var inFlight struct{ ID string }
	_ = json.Unmarshal(data, &inFlight)
	inFlightURL := dev.apiURL + "/api/v1/projects/kept/pipelines/slow/records/" + inFlight.ID
	waitFor(t, func() bool {
		_, b := request(t, "GET", inFlightURL, "")
		return strings.Contains(string(b), `"unitTest":{"status":"Running"`)
	})
	dev.stop(t)

	if _, err := os.Stat(filepath.Join(dataDir, "secret.key")); err != nil {
		t.Fatalf("dev mode keeps no secret key: %v", err)
	}

	dev = startDev(t, bin, dataDir, addrs)
	status, data = request(t, "GET", dev.apiURL+"/api/v1/projects/kept", "")
	if status != http.StatusOK {
		t.Fatalf("project lost after restart: %d %s", status, data)
	}
	if strings.Contains(string(data), "glpat-kept-secret") || !strings.Contains(string(data), `"tokenSet":true`) {
		t.Fatalf("project after restart: %s", data)
	}
	waitRecord(t, dev.apiURL+"/api/v1/projects/kept/pipelines/p/records/"+rec.ID, "Success")
	waitRecord(t, inFlightURL, "Success")
	dev.stop(t)
}

func waitRecord(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		status, data := request(t, "GET", url, "")
		var rec struct{ Status string }
		_ = json.Unmarshal(data, &rec)
		if status == http.StatusOK && rec.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record not %s: %d %s", want, status, data)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestHelpDocumentsFlagsAndEnv(t *testing.T) {
	bin := buildBinary(t)
	for cmd, flags := range map[string][]string{
		"dev":    {"--data-dir", "--listen", "--ui-address", "--executor", "CYCLONE_DATA_DIR"},
		"server": {"--temporal-address", "--temporal-namespace", "--mongo-uri", "--mongo-database", "--listen", "--secret-key", "CYCLONE_MONGO_URI"},
		"worker": {"--temporal-address", "--mongo-uri", "--executor", "--worker-id", "CYCLONE_WORKER_ID"},
	} {
		out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, f := range flags {
			if !strings.Contains(string(out), f) {
				t.Errorf("cyclone %s --help does not document %s:\n%s", cmd, f, out)
			}
		}
	}
}

func TestServerRefusesToStartWithoutSecretKey(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "server", "--mongo-uri", "mongodb://127.0.0.1:1", "--listen", freeAddr(t))
	cmd.Env = append(os.Environ(), "CYCLONE_SECRET_KEY=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "secret-key") {
		t.Fatalf("server started without a key or said nothing useful: %v\n%s", err, out)
	}
	cmd = exec.Command(bin, "server", "--secret-key", "too-short")
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "32 bytes") {
		t.Fatalf("server accepted a bad key: %v\n%s", err, out)
	}
}

// A worker process killed in the middle of a stage is replaced by a new one with the
// same identity: the stage is retried there and the record ends Success.
func TestWorkerKilledMidStage(t *testing.T) {
	bin := buildBinary(t)
	env := append(startBackends(t, "killtest").env, "CYCLONE_LOG_LEVEL=warn")
	api := freeAddr(t)
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	apiToken = "cyc_kill-test-admin"
	start("server", "--listen", api, "--admin-token", apiToken)
	workspaces := t.TempDir()
	worker := start("worker", "--executor", "local", "--workspace-root", workspaces, "--worker-id", "w1")

	base := "http://" + api + "/api/v1"
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if s, b := request(t, "POST", base+"/projects", `{"name":"k","scm":{"type":"Github","server":"https://github.com"}}`); s != http.StatusCreated {
		t.Fatalf("project: %d %s", s, b)
	}
	pipeline := `{"name":"p","build":{"builderImage":{"image":"x"},"stages":{
		"unitTest":{"command":["echo attempt >> attempts.txt","sleep 3"]},
		"package":{"command":["test $(wc -l < attempts.txt) -ge 2"]}}}}`
	if s, b := request(t, "POST", base+"/projects/k/pipelines", pipeline); s != http.StatusCreated {
		t.Fatalf("pipeline: %d %s", s, b)
	}
	s, b := request(t, "POST", base+"/projects/k/pipelines/p/records", `{"ref":"master"}`)
	if s != http.StatusCreated {
		t.Fatalf("record: %d %s", s, b)
	}
	var rec struct{ ID string }
	_ = json.Unmarshal(b, &rec)
	recURL := base + "/projects/k/pipelines/p/records/" + rec.ID
	// Kill once the first attempt's command has run: the Running mark is written
	// while the step starts, so it can come before the command's first line.
	waitFor(t, func() bool {
		_, err := os.Stat(filepath.Join(workspaces, rec.ID, "workspace", "attempts.txt"))
		return err == nil
	})
	if err := worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = worker.Wait()
	start("worker", "--executor", "local", "--workspace-root", workspaces, "--worker-id", "w1")
	waitRecord(t, recURL, "Success")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
