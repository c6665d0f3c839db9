package webhook_test

import (
	"errors"
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

// seedHeader is a payload in testdata with the event header its SCM sends with it, and
// what parsing it gives: an event of kind want, or an *Ignored when want is "".
type seedHeader struct {
	event string
	want  webhook.Kind
}

// githubSeeds and gitlabSeeds pair every seed payload with its own event header, so
// each seed reaches the parser it was written for (a push body under a
// pull_request header is refused before the parser looks at it).
var (
	githubSeeds = map[string]seedHeader{
		"github_create_tag.json":    {webhook.GitHubCreate, webhook.KindTagRelease},
		"github_issue_comment.json": {webhook.GitHubIssueComment, webhook.KindPullRequestComment},
		"github_ping.json":          {webhook.GitHubPing, ""},
		"github_pull_request.json":  {webhook.GitHubPullRequest, webhook.KindPullRequest},
		"github_push.json":          {webhook.GitHubPush, webhook.KindPush},
		"github_push_deleted.json":  {webhook.GitHubPush, ""},
		"github_push_tag.json":      {webhook.GitHubPush, webhook.KindTagRelease},
		"github_release.json":       {webhook.GitHubRelease, webhook.KindTagRelease},
	}
	gitlabSeeds = map[string]seedHeader{
		"gitlab_merge_request.json":        {webhook.GitLabMergeRequest, webhook.KindPullRequest},
		"gitlab_merge_request_update.json": {webhook.GitLabMergeRequest, webhook.KindPullRequest},
		"gitlab_note.json":                 {webhook.GitLabNote, webhook.KindPullRequestComment},
		"gitlab_push.json":                 {webhook.GitLabPush, webhook.KindPush},
		"gitlab_tag_push.json":             {webhook.GitLabTagPush, webhook.KindTagRelease},
	}
)

// seedFile is one seed payload read from testdata.
type seedFile struct {
	name string
	body []byte
}

// seeds reads the payloads testdata/<prefix>*; a payload missing from known (when
// known is not nil) fails, so a new seed cannot go in without its event header.
func seeds(tb testing.TB, prefix string, known map[string]seedHeader) []seedFile {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", prefix+"*"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no seed payloads testdata/%s*: %v", prefix, err)
	}
	var out []seedFile
	for _, file := range files {
		name := filepath.Base(file)
		if _, ok := known[name]; known != nil && !ok {
			tb.Fatalf("seed %s has no event header: add it to the seed table", name)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, seedFile{name, data})
	}
	if known != nil && len(out) != len(known) {
		tb.Fatalf("%d seed payloads testdata/%s* for %d table entries", len(out), prefix, len(known))
	}
	return out
}

// TestSeedsParse checks that each seed, under its own event header, gives the event
// it was written for: the fuzz targets start from payloads the parsers accept.
func TestSeedsParse(t *testing.T) {
	parse := map[string]func(event string, body []byte) (*webhook.Event, error){
		"github_": func(event string, body []byte) (*webhook.Event, error) {
			return webhook.ParseGitHub(event, "delivery", body)
		},
		"gitlab_": func(event string, body []byte) (*webhook.Event, error) {
			return webhook.ParseGitLab(event, "uuid", body)
		},
	}
	for prefix, table := range map[string]map[string]seedHeader{"github_": githubSeeds, "gitlab_": gitlabSeeds} {
		for _, s := range seeds(t, prefix, table) {
			want := table[s.name]
			ev, err := parse[prefix](want.event, s.body)
			var ign *webhook.Ignored
			switch {
			case want.want == "" && !errors.As(err, &ign):
				t.Errorf("%s (%s): want ignored, got %+v, %v", s.name, want.event, ev, err)
			case want.want != "" && err != nil:
				t.Errorf("%s (%s): %v", s.name, want.event, err)
			case want.want != "" && ev.Kind != want.want:
				t.Errorf("%s (%s): kind %s, want %s", s.name, want.event, ev.Kind, want.want)
			}
		}
	}
	for _, s := range seeds(t, "svn_", nil) {
		if _, err := webhook.ParseSVN("a2b1c6f2-6f2e-4a53-9d6b-2c1f0e0d9a11", "27", s.body); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
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
	for _, s := range seeds(f, "github_", githubSeeds) {
		f.Add(githubSeeds[s.name].event, s.body)
	}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := webhook.ParseGitHub(event, "delivery", body)
		checkEvent(t, ev, err)
	})
}

func FuzzGitLab(f *testing.F) {
	for _, s := range seeds(f, "gitlab_", gitlabSeeds) {
		f.Add(gitlabSeeds[s.name].event, s.body)
		// GitLab's object_kind decides when the header is missing.
		f.Add("", s.body)
	}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := webhook.ParseGitLab(event, "uuid", body)
		checkEvent(t, ev, err)
	})
}

func FuzzSVN(f *testing.F) {
	for _, s := range seeds(f, "svn_", nil) {
		f.Add("a2b1c6f2-6f2e-4a53-9d6b-2c1f0e0d9a11", "27", s.body)
	}
	f.Fuzz(func(t *testing.T, repoID, revision string, body []byte) {
		ev, err := webhook.ParseSVN(repoID, revision, body)
		checkEvent(t, ev, err)
		if err == nil && len(ev.ChangedPaths) == 0 {
			t.Fatal("a post-commit event without changed paths")
		}
	})
}
