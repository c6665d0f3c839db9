package webhook_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/webhook"
)

// everyTrigger matches whatever a parser returns, so fuzzing reaches Match too.
var everyTrigger = &model.SCMTrigger{
	Push:               &model.PushTrigger{Branches: []string{"*", "release/*"}},
	TagRelease:         &model.StagesTrigger{},
	PullRequest:        &model.StagesTrigger{},
	PullRequestComment: &model.CommentTrigger{Comments: []string{"/retest", "*build*"}},
	PostCommit:         &model.StagesTrigger{},
}

func seeds(f *testing.F, prefix string) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", prefix+"*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed payloads testdata/%s*: %v", prefix, err)
	}
	var out [][]byte
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// checkEvent fails on an event a parser must never return.
func checkEvent(t *testing.T, ev *webhook.Event, err error) {
	t.Helper()
	if err != nil {
		if ev != nil {
			t.Fatalf("an event and an error: %+v %v", ev, err)
		}
		return
	}
	if ev.Kind == "" || ev.Repo == "" || ev.Ref == "" {
		t.Fatalf("incomplete event %+v", ev)
	}
	if strings.HasPrefix(ev.Ref, "refs/") {
		if e := model.ValidateRef("ref", ev.Ref); e != nil {
			t.Fatalf("invalid ref %q: %v", ev.Ref, e)
		}
	}
	_ = webhook.Match(everyTrigger, ev, "a/b")
	_ = webhook.RecordID("p", ev)
	_ = webhook.SameRepo("https://github.com/o/r", ev)
}

func FuzzGitHub(f *testing.F) {
	events := []string{"push", "create", "release", "pull_request", "issue_comment", "ping"}
	for i, s := range seeds(f, "github_") {
		f.Add(events[i%len(events)], s)
	}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := webhook.ParseGitHub(event, "delivery", body)
		checkEvent(t, ev, err)
	})
}

func FuzzGitLab(f *testing.F) {
	events := []string{"Push Hook", "Tag Push Hook", "Merge Request Hook", "Note Hook", ""}
	for i, s := range seeds(f, "gitlab_") {
		f.Add(events[i%len(events)], s)
	}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := webhook.ParseGitLab(event, "uuid", body)
		checkEvent(t, ev, err)
	})
}

func FuzzSVN(f *testing.F) {
	for _, s := range seeds(f, "svn_") {
		f.Add("a2b1c6f2-6f2e-4a53-9d6b-2c1f0e0d9a11", "27", s)
	}
	f.Fuzz(func(t *testing.T, repoID, revision string, body []byte) {
		ev, err := webhook.ParseSVN(repoID, revision, body)
		checkEvent(t, ev, err)
		if err == nil && len(ev.ChangedPaths) == 0 {
			t.Fatal("a post-commit event without changed paths")
		}
	})
}
