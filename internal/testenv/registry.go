package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a real image registry on loopback: Debian's docker-registry (the CNCF
// distribution registry) with filesystem storage in a temp dir and basic auth from
// a bcrypt htpasswd file. The Docker engine treats 127.0.0.0/8 as an insecure
// registry by default, so it pushes there over plain HTTP.
type Registry struct {
	Host     string // 127.0.0.1:port, as image references name it
	Username string
	Password string

	t   testing.TB
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *Registry) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(b)
}

// Output is what the registry process printed.
func (r *Registry) Output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// StartRegistry starts a registry that accepts username/password and stops it when
// the test ends. It fails the test when docker-registry is missing (`make
// test-deps` installs it).
func StartRegistry(t testing.TB, username, password string) *Registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry is required (make test-deps installs Debian's docker-registry): %v", err)
	}
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(username+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	config := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
auth:
  htpasswd:
    realm: cyclone-test
    path: %s
`, filepath.Join(dir, "data"), addr, hex.EncodeToString(secret), htpasswd)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	r := &Registry{Host: addr, Username: username, Password: password, t: t}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = r, r
	if err := cmd.Start(); err != nil {
		t.Fatalf("start docker-registry: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	// Ready when /v2/ asks for credentials.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		select {
		case <-done:
			t.Fatalf("docker-registry exited: %s", r.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry not ready at %s (last error %v): %s", addr, err, r.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// manifestTypes are the manifest media types a client of the registry accepts.
var manifestTypes = []string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
}

// Manifest fetches the manifest of name:tag from the registry API with the
// registry's credentials. It returns the HTTP status, the manifest's media type
// and its body (an absent manifest is a 404, not a test failure).
func (r *Registry) Manifest(name, tag string) (status int, mediaType string, body []byte) {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+r.Host+"/v2/"+name+"/manifests/"+tag, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	req.SetBasicAuth(r.Username, r.Password)
	req.Header.Set("Accept", strings.Join(manifestTypes, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("get manifest %s:%s: %v", name, tag, err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}
