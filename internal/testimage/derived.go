package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
)

// Derived builds the image tag FROM BusyboxImage with the given files added
// (path in the image -> content; executable), e.g. a script standing in for a
// program that cannot be pulled here. The image is removed when the test ends. It
// fails the test when the build fails.
func Derived(t testing.TB, cli *client.Client, tag string, files map[string]string) string {
	t.Helper()
	base := Busybox(t, cli)
	var df bytes.Buffer
	fmt.Fprintf(&df, "FROM %s\nLABEL io.cyclone.test=true\n", base)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	mtime := time.Unix(0, 0)
	for i, p := range paths {
		name := fmt.Sprintf("file%d", i)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(files[p])), ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[p])); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&df, "COPY %s %s\n", name, p)
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: int64(df.Len()), ModTime: mtime}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(df.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{tag}, Dockerfile: "Dockerfile", Remove: true, ForceRemove: true, Version: build.BuilderV1,
	})
	if err != nil {
		t.Fatalf("testimage: build %s: %v", tag, err)
	}
	defer resp.Body.Close()
	var log bytes.Buffer
	if err := jsonmessage.DisplayJSONMessagesStream(resp.Body, &log, 0, false, nil); err != nil {
		t.Fatalf("testimage: build %s: %v\n%s", tag, err, log.String())
	}
	t.Cleanup(func() {
		_, _ = cli.ImageRemove(context.Background(), tag, image.RemoveOptions{Force: true})
	})
	return tag
}
