package testimage_test

import (
	"context"
	"testing"

	"github.com/cycloneci/cyclone/internal/testimage"
)

func TestBusybox(t *testing.T) {
	cli := testimage.RequireDocker(t)
	img := testimage.Busybox(t, cli)
	if img != testimage.BusyboxImage {
		t.Errorf("Busybox = %q, want %q", img, testimage.BusyboxImage)
	}
	// A second call uses the image built by the first.
	if img2 := testimage.Busybox(t, cli); img2 != img {
		t.Errorf("second Busybox = %q", img2)
	}
	inspect, err := cli.ImageInspect(context.Background(), img)
	if err != nil {
		t.Fatalf("ImageInspect: %v", err)
	}
	if got := inspect.Config.Labels["io.cyclone.test"]; got != "true" {
		t.Errorf("label io.cyclone.test = %q", got)
	}
}
