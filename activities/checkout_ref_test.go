package activities

import (
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
)

func TestGitFetchRef(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		params model.PerformParams
		want   string
	}{
		{model.PerformParams{Ref: "refs/heads/master"}, "refs/heads/master"},
		{model.PerformParams{Ref: "refs/pull/1/head", Commit: sha}, sha},
		{model.PerformParams{Ref: "master", Commit: "27"}, "master"},              // an SVN revision
		{model.PerformParams{Ref: "master", Commit: "--upload-pack=x"}, "master"}, // never an option
	} {
		if got := gitFetchRef(tc.params); got != tc.want {
			t.Errorf("gitFetchRef(%+v) = %q, want %q", tc.params, got, tc.want)
		}
	}
}
