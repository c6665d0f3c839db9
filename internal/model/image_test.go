package model_test

import (
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
)

func TestValidImageName(t *testing.T) {
	for _, ok := range []string{"web", "team/web", "my-app", "my_app", "a.b/c__d", "web:v1", "team/web:1.0_rc-1"} {
		if !model.ValidImageName(ok) {
			t.Errorf("image name %q refused", ok)
		}
	}
	for _, bad := range []string{"", "Web", "web:", ":v1", "/web", "web/", "-web", "a..b", "web@sha256:abc", "web:-x", "host:5000/web", "web:v1:v2"} {
		if model.ValidImageName(bad) {
			t.Errorf("image name %q accepted", bad)
		}
	}
	if path, tag := model.SplitImageName("team/web:v1"); path != "team/web" || tag != "v1" {
		t.Errorf("SplitImageName = %q, %q", path, tag)
	}
}
