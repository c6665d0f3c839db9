// Package testimage gives tests a Docker engine and a small image to run steps in.
//
// Tests of the Docker executor (and of anything built on it) run real containers, but
// no image can be pulled from a registry where the tests run. Busybox therefore builds
// one locally, FROM scratch, out of the host's statically linked busybox (Debian
// package busybox-static, installed by `make test-deps`): /bin/busybox plus a
// symbolic link in /bin for each of its applets (sh, echo, cat, sleep, ...), and a
// /tmp. The build context is a tar archive made in Go and sent to the engine's
// build API; nothing is fetched from the network.
//
// Both helpers fail the test (they never skip it): a missing engine or busybox is a
// broken test environment, not a reason to silently test less.
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// BusyboxImage is the tag of the image Busybox builds.
const BusyboxImage = "cyclone-test/busybox:latest"

// busyboxPath is where Debian's busybox-static puts the binary.
const busyboxPath = "/bin/busybox"

// busyboxWait is how long Busybox waits for busyboxPath to appear (the package may
// still be being installed when the tests start).
const busyboxWait = 60 * time.Second

const dockerfile = `FROM scratch
COPY rootfs/ /
ENV PATH=/bin
LABEL io.cyclone.test=true
CMD ["/bin/sh"]
`

var (
	buildOnce sync.Once
	buildErr  error
)

// RequireDocker returns a client of the Docker engine configured by the environment
// (DOCKER_HOST etc., by default /var/run/docker.sock), with API version
// negotiation. It fails the test if the engine cannot be reached. The client is
// closed when the test ends.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("testimage: Docker client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		t.Fatalf("testimage: the Docker engine at %s is unreachable (these tests need a running Docker engine): %v", cli.DaemonHost(), err)
	}
	return cli
}

// Busybox makes sure the image BusyboxImage exists on the engine of cli and returns
// its tag. The image is built once per test process; the engine's build cache makes
// later builds (other test processes) cheap. It fails the test when busybox is
// missing or the build fails.
func Busybox(t testing.TB, cli *client.Client) string {
	t.Helper()
	buildOnce.Do(func() { buildErr = buildBusybox(cli) })
	if buildErr != nil {
		t.Fatalf("testimage: %v", buildErr)
	}
	return BusyboxImage
}

func buildBusybox(cli *client.Client) error {
	bin, err := readBusybox()
	if err != nil {
		return err
	}
	applets, err := busyboxApplets()
	if err != nil {
		return err
	}
	buildCtx, err := buildContext(bin, applets)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, bytes.NewReader(buildCtx), build.ImageBuildOptions{
		Tags:        []string{BusyboxImage},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1, // the classic builder needs no session
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", BusyboxImage, err)
	}
	defer resp.Body.Close()
	var log bytes.Buffer
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, &log, 0, false, nil); err != nil {
		return fmt.Errorf("build %s: %w\n%s", BusyboxImage, err, log.String())
	}
	if _, err := cli.ImageInspect(ctx, BusyboxImage); err != nil {
		return fmt.Errorf("build %s: image missing after the build: %w\n%s", BusyboxImage, err, log.String())
	}
	return nil
}

// readBusybox returns the static busybox binary, waiting a while for it to appear.
func readBusybox() ([]byte, error) {
	deadline := time.Now().Add(busyboxWait)
	for {
		bin, err := os.ReadFile(busyboxPath)
		if err == nil {
			if err := checkStatic(busyboxPath); err != nil {
				return nil, err
			}
			return bin, nil
		}
		if !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return nil, fmt.Errorf("%s is needed to build the test image %s (`make test-deps` installs Debian's busybox-static): %w", busyboxPath, BusyboxImage, err)
		}
		time.Sleep(2 * time.Second)
	}
}

// checkStatic fails for a dynamically linked busybox, which cannot run in an image
// made FROM scratch.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable (`make test-deps` installs Debian's busybox-static): %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked and cannot run in an image FROM scratch; `make test-deps` installs Debian's busybox-static", path)
		}
	}
	return nil
}

// busyboxApplets lists the applets of the host's busybox.
func busyboxApplets() ([]string, error) {
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busyboxPath, err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.ContainsAny(a, "/.") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets", busyboxPath)
	}
	return applets, nil
}

// buildContext makes the tar build context: the Dockerfile and rootfs/ holding
// bin/busybox, a symbolic link bin/<applet> -> busybox per applet, and tmp.
func buildContext(bin []byte, applets []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// A fixed time keeps the context, and so the build cache key, stable.
	mtime := time.Unix(0, 0)
	add := func(h *tar.Header, data []byte) error {
		h.ModTime = mtime
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := io.Copy(tw, bytes.NewReader(data))
		return err
	}
	entries := []struct {
		h    *tar.Header
		data []byte
	}{
		{&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}, []byte(dockerfile)},
		{&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs/", Mode: 0o755}, nil},
		{&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs/bin/", Mode: 0o755}, nil},
		{&tar.Header{Typeflag: tar.TypeDir, Name: "rootfs/tmp/", Mode: 0o1777}, nil},
		{&tar.Header{Typeflag: tar.TypeReg, Name: "rootfs/bin/busybox", Mode: 0o755, Size: int64(len(bin))}, bin},
	}
	for _, e := range entries {
		if err := add(e.h, e.data); err != nil {
			return nil, fmt.Errorf("build context: %w", err)
		}
	}
	for _, a := range applets {
		if err := add(&tar.Header{Typeflag: tar.TypeSymlink, Name: "rootfs/bin/" + a, Linkname: "busybox", Mode: 0o777}, nil); err != nil {
			return nil, fmt.Errorf("build context: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}
	return buf.Bytes(), nil
}
