package deploy_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/testimage"
)

func run(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestImageBuildsFromScratch builds the static binary and the image from
// Dockerfile.binary on scratch (no base image can be pulled here), then runs it.
func TestImageBuildsFromScratch(t *testing.T) {
	testimage.RequireDocker(t)
	ctxDir := t.TempDir()
	// The flags of make test's builds (CGO_ENABLED=0, no -trimpath): the build
	// cache has every package already, so this only links.
	if out, err := run(t, "..", []string{"CGO_ENABLED=0", "GOTOOLCHAIN=local"}, "go", "build",
		"-o", filepath.Join(ctxDir, "cyclone"), "./cmd/cyclone"); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	if out, _ := run(t, "", nil, "file", filepath.Join(ctxDir, "cyclone")); out != "" && !strings.Contains(out, "statically linked") && !strings.Contains(out, "static-pie") {
		t.Fatalf("the binary is not static: %s", out)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	tag := "cyclone-image-test:" + hex.EncodeToString(b)
	if out, err := run(t, ".", nil, "docker", "build", "-q", "-f", "Dockerfile.binary", "--build-arg", "BASE_IMAGE=scratch", "-t", tag, ctxDir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = run(t, "", nil, "docker", "rmi", "-f", tag) })

	out, err := run(t, "", nil, "docker", "image", "inspect", tag)
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	var inspect []struct {
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			ExposedPorts map[string]any
		}
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("inspect output: %v\n%s", err, out)
	}
	cfg := inspect[0].Config
	if cfg.User != "65532:65532" || strings.Join(cfg.Entrypoint, " ") != "/usr/local/bin/cyclone" || strings.Join(cfg.Cmd, " ") != "server" {
		t.Fatalf("image config %+v, want non-root user, the cyclone entrypoint and server", cfg)
	}

	help, err := run(t, "", nil, "docker", "run", "--rm", "--network", "none", tag, "--help")
	if err != nil || !strings.Contains(help, "server") || !strings.Contains(help, "worker") || !strings.Contains(help, "dev") {
		t.Fatalf("cyclone --help in the image: %v\n%s", err, help)
	}
	// The default command refuses to start without its secrets, saying so.
	out, err = run(t, "", nil, "docker", "run", "--rm", "--network", "none", tag)
	if err == nil || !strings.Contains(out, "secret-key") {
		t.Fatalf("cyclone server without --secret-key: %v\n%s", err, out)
	}
}

// TestDockerfileShape checks the multi-stage Dockerfile users build: a static
// binary, the same runtime stage as Dockerfile.binary, a non-root user.
func TestDockerfileShape(t *testing.T) {
	multi, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	binary, err := os.ReadFile("Dockerfile.binary")
	if err != nil {
		t.Fatal(err)
	}
	m := string(multi)
	for _, want := range []string{"CGO_ENABLED=0 go build", "AS build", "COPY --from=build /out/cyclone /usr/local/bin/cyclone"} {
		if !strings.Contains(m, want) {
			t.Fatalf("deploy/Dockerfile lacks %q", want)
		}
	}
	runtime := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			for _, k := range []string{"USER ", "EXPOSE ", "ENTRYPOINT ", "CMD "} {
				if strings.HasPrefix(l, k) {
					out = append(out, l)
				}
			}
		}
		return out
	}
	if a, b := strings.Join(runtime(m), "\n"), strings.Join(runtime(string(binary)), "\n"); a != b || !strings.Contains(a, "USER 65532:65532") {
		t.Fatalf("runtime stages differ or run as root:\n%s\n---\n%s", a, b)
	}
}
