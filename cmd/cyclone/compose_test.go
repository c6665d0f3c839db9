package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// composeConfig runs `docker-compose config` on the repository's compose file with
// env added, returning its output and error.
func composeConfig(t *testing.T, env ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose is required (make test-deps installs it): %v", err)
	}
	cmd := exec.Command(bin, "-f", "docker-compose.yml", "config")
	cmd.Dir = "../.."
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CYCLONE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestComposeFile validates docker-compose.yml the way Compose reads it, checks the
// production shape, and that every CYCLONE_* variable it sets is a flag of the
// command the service runs.
func TestComposeFile(t *testing.T) {
	if out, err := composeConfig(t); err == nil || !strings.Contains(out, "CYCLONE_SECRET_KEY") {
		t.Fatalf("compose accepted a missing secret key: %v\n%s", err, out)
	}
	out, err := composeConfig(t, "CYCLONE_SECRET_KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "CYCLONE_ADMIN_TOKEN=admin")
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var cfg struct {
		Services map[string]struct {
			Image       string
			Command     []string
			Environment map[string]string
			Volumes     []any
			Ports       []any
		}
	}
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("compose config output: %v\n%s", err, out)
	}
	for _, name := range []string{"postgresql", "temporal", "temporal-ui", "mongodb", "cyclone-server", "cyclone-worker"} {
		if _, ok := cfg.Services[name]; !ok {
			t.Fatalf("service %s missing from the production shape", name)
		}
	}
	envs := commandEnvs(t)
	for _, name := range []string{"cyclone-server", "cyclone-worker"} {
		svc := cfg.Services[name]
		if len(svc.Command) == 0 || envs[svc.Command[0]] == nil {
			t.Fatalf("%s runs %v, not a cyclone command", name, svc.Command)
		}
		for k := range svc.Environment {
			if strings.HasPrefix(k, "CYCLONE_") && !envs[svc.Command[0]][k] {
				t.Errorf("%s sets %s, which is no flag of cyclone %s", name, k, svc.Command[0])
			}
		}
	}
	if vols, _ := yaml.Marshal(cfg.Services["cyclone-worker"].Volumes); !strings.Contains(string(vols), "/var/run/docker.sock") {
		t.Fatalf("the worker does not get the Docker socket: %s", vols)
	}
	if ports, _ := yaml.Marshal(cfg.Services["temporal"].Ports); !strings.Contains(string(ports), "127.0.0.1") {
		t.Fatalf("Temporal's port is published beyond loopback: %s", ports)
	}
}
