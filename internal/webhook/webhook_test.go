package webhook_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/webhook"
)

func seed(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const (
	ghSHA = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
	glSHA = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
)

func TestParseGitHub(t *testing.T) {
	tests := []struct {
		name, event, file string
		want              webhook.Event
		ignored           string // substring of the reason
	}{
		{name: "push", event: "push", file: "github_push.json",
			want: webhook.Event{Kind: webhook.KindPush, Ref: "refs/heads/changes", Branch: "changes", SHA: ghSHA}},
		{name: "tag push", event: "push", file: "github_push_tag.json",
			want: webhook.Event{Kind: webhook.KindTagRelease, Ref: "refs/tags/v1.2.0", Tag: "v1.2.0", SHA: ghSHA}},
		{name: "deleted branch", event: "push", file: "github_push_deleted.json", ignored: "deleted"},
		{name: "tag created", event: "create", file: "github_create_tag.json",
			want: webhook.Event{Kind: webhook.KindTagRelease, Ref: "refs/tags/v1.2.0", Tag: "v1.2.0"}},
		{name: "release", event: "release", file: "github_release.json",
			want: webhook.Event{Kind: webhook.KindTagRelease, Ref: "refs/tags/v1.2.0", Tag: "v1.2.0"}},
		{name: "pull request", event: "pull_request", file: "github_pull_request.json",
			want: webhook.Event{Kind: webhook.KindPullRequest, Ref: "refs/pull/1/head", SHA: ghSHA, Branch: "changes", PRNumber: 1}},
		{name: "comment", event: "issue_comment", file: "github_issue_comment.json",
			want: webhook.Event{Kind: webhook.KindPullRequestComment, Ref: "refs/pull/1/head", PRNumber: 1, Comment: "/retest"}},
		{name: "ping", event: "ping", file: "github_ping.json", ignored: "ping"},
		{name: "other event", event: "watch", file: "github_ping.json", ignored: "does not trigger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := webhook.ParseGitHub(tt.event, "d-1", seed(t, tt.file))
			var ign *webhook.Ignored
			if tt.ignored != "" {
				if !errors.As(err, &ign) || !strings.Contains(ign.Reason, tt.ignored) {
					t.Fatalf("got %+v, %v; want ignored %q", ev, err, tt.ignored)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Repo != "baxterthehacker/public-repo" || ev.DeliveryID != "d-1" {
				t.Errorf("repo %q delivery %q", ev.Repo, ev.DeliveryID)
			}
			if !webhook.SameRepo("https://github.com/BaxterTheHacker/public-repo.git", ev) ||
				!webhook.SameRepo("git@github.com:baxterthehacker/public-repo.git", ev) {
				t.Errorf("SameRepo false for the payload's own repository: %q", ev.RepoURLs)
			}
			if webhook.SameRepo("https://github.com/baxterthehacker/other-repo", ev) ||
				webhook.SameRepo("https://gitlab.com/baxterthehacker/public-repo", ev) {
				t.Error("SameRepo true for another repository")
			}
			got := *ev
			got.Repo, got.RepoURLs, got.DeliveryID = "", nil, ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseGitHubIgnoredAndMalformed(t *testing.T) {
	push := string(seed(t, "github_push.json"))
	comment := string(seed(t, "github_issue_comment.json"))
	pr := string(seed(t, "github_pull_request.json"))
	tests := []struct {
		name, event, body string
		ignored           bool
	}{
		{"not JSON", "push", "{", false},
		{"array", "push", "[1,2]", false},
		{"ref is a number", "push", `{"ref": 1}`, false},
		{"no repository", "push", `{"ref":"refs/heads/x","after":"` + ghSHA + `"}`, false},
		{"bad sha", "push", strings.Replace(push, ghSHA, "zzzz", 1), false},
		{"notes ref", "push", strings.Replace(push, "refs/heads/changes", "refs/notes/x", 1), false},
		{"bad branch", "push", strings.Replace(push, "refs/heads/changes", "refs/heads/a..b", 1), false},
		{"no event header", "", push, false},
		{"comment on an issue", "issue_comment", strings.Replace(comment, `"pull_request": {`, `"pull_request_x": {`, 1), true},
		{"edited comment", "issue_comment", strings.Replace(comment, `"action": "created"`, `"action": "edited"`, 1), true},
		{"comment on a closed PR", "issue_comment", strings.Replace(comment, `"state": "open"`, `"state": "closed"`, 1), true},
		{"closed PR", "pull_request", strings.Replace(pr, `"action": "opened"`, `"action": "closed"`, 1), true},
		{"synchronize", "pull_request", strings.Replace(pr, `"action": "opened"`, `"action": "synchronize"`, 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := webhook.ParseGitHub(tt.event, "", []byte(tt.body))
			var ign *webhook.Ignored
			var bad *webhook.MalformedError
			switch {
			case tt.name == "synchronize":
				if err != nil || ev.Kind != webhook.KindPullRequest {
					t.Fatalf("synchronize: %+v %v", ev, err)
				}
			case tt.ignored && !errors.As(err, &ign):
				t.Fatalf("want ignored, got %+v %v", ev, err)
			case !tt.ignored && !errors.As(err, &bad):
				t.Fatalf("want malformed, got %+v %v", ev, err)
			}
		})
	}
}

func TestParseGitLab(t *testing.T) {
	tests := []struct {
		name, event, file string
		want              webhook.Event
	}{
		{"push", "Push Hook", "gitlab_push.json",
			webhook.Event{Kind: webhook.KindPush, Ref: "refs/heads/master", Branch: "master", SHA: glSHA}},
		{"no header", "", "gitlab_push.json",
			webhook.Event{Kind: webhook.KindPush, Ref: "refs/heads/master", Branch: "master", SHA: glSHA}},
		{"tag push", "Tag Push Hook", "gitlab_tag_push.json",
			webhook.Event{Kind: webhook.KindTagRelease, Ref: "refs/tags/v1.0.0", Tag: "v1.0.0", SHA: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"}},
		{"merge request", "Merge Request Hook", "gitlab_merge_request.json",
			webhook.Event{Kind: webhook.KindPullRequest, Ref: "refs/merge-requests/1/head", SHA: glSHA, Branch: "ms-viewport", PRNumber: 1}},
		{"merge request with new commits", "Merge Request Hook", "gitlab_merge_request_update.json",
			webhook.Event{Kind: webhook.KindPullRequest, Ref: "refs/merge-requests/1/head", SHA: "c2e6f3c31b2a0f6e7e0a3fcd0b0c0b3f5b7d1e22", Branch: "ms-viewport", PRNumber: 1}},
		{"note", "Note Hook", "gitlab_note.json",
			webhook.Event{Kind: webhook.KindPullRequestComment, Ref: "refs/merge-requests/1/head", SHA: "562e173be03b8ff2efb05345d12df18815438a4b", Branch: "master", PRNumber: 1, Comment: "/retest"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := webhook.ParseGitLab(tt.event, "uuid-1", seed(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if ev.Repo != "mike/diaspora" || ev.DeliveryID != "uuid-1" || !webhook.SameRepo("http://example.com/mike/diaspora", ev) {
				t.Errorf("repo %q %q delivery %q", ev.Repo, ev.RepoURLs, ev.DeliveryID)
			}
			got := *ev
			got.Repo, got.RepoURLs, got.DeliveryID = "", nil, ""
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}

	mr := string(seed(t, "gitlab_merge_request.json"))
	note := string(seed(t, "gitlab_note.json"))
	push := string(seed(t, "gitlab_push.json"))
	for name, c := range map[string]struct {
		event, body string
		ignored     bool
	}{
		"update without commits": {"Merge Request Hook", strings.Replace(mr, `"action": "open"`, `"action": "update"`, 1), true},
		"merged":                 {"Merge Request Hook", strings.Replace(mr, `"action": "open"`, `"action": "merge"`, 1), true},
		"note on a commit":       {"Note Hook", strings.Replace(note, `"noteable_type": "MergeRequest"`, `"noteable_type": "Commit"`, 1), true},
		"note on a closed MR":    {"Note Hook", strings.Replace(note, `"state": "opened"`, `"state": "closed"`, 1), true},
		"branch deleted":         {"Push Hook", strings.Replace(strings.Replace(push, `"after": "`+glSHA, `"after": "0000000000000000000000000000000000000000`, 1), `"checkout_sha": "`+glSHA+`"`, `"checkout_sha": null`, 1), true},
		"wrong header":           {"Tag Push Hook", push, false},
		"unknown header":         {"Pipeline Hook", push, true},
		"no project":             {"Push Hook", `{"object_kind":"push","ref":"refs/heads/x","after":"` + glSHA + `"}`, false},
		"not JSON":               {"Push Hook", `object_kind=push`, false},
	} {
		t.Run(name, func(t *testing.T) {
			ev, err := webhook.ParseGitLab(c.event, "", []byte(c.body))
			var ign *webhook.Ignored
			var bad *webhook.MalformedError
			if c.ignored && !errors.As(err, &ign) || !c.ignored && !errors.As(err, &bad) {
				t.Fatalf("got %+v %v, want ignored=%v", ev, err, c.ignored)
			}
		})
	}
}

const repoUUID = "a2b1c6f2-6f2e-4a53-9d6b-2c1f0e0d9a11"

func TestParseSVN(t *testing.T) {
	ev, err := webhook.ParseSVN(repoUUID, "27", seed(t, "svn_changed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cyclone/test.go", "cyclone/README.md", "docs/", "docs/index.md", "cyclone/", "branches/1.x/"}
	if ev.Kind != webhook.KindPostCommit || ev.Ref != "27" || ev.SHA != "27" || !reflect.DeepEqual(ev.ChangedPaths, want) {
		t.Fatalf("got %+v", ev)
	}
	for name, c := range map[string]struct{ id, rev, body string }{
		"bad uuid":     {"../etc", "1", "U   a\n"},
		"no revision":  {repoUUID, "", "U   a\n"},
		"revision 0":   {repoUUID, "0", "U   a\n"},
		"negative":     {repoUUID, "-3", "U   a\n"},
		"not svnlook":  {repoUUID, "3", "hello world\n"},
		"status only":  {repoUUID, "3", "U   \n"},
		"json instead": {repoUUID, "3", `{"changed": ["a"]}`},
	} {
		t.Run(name, func(t *testing.T) {
			var bad *webhook.MalformedError
			if _, err := webhook.ParseSVN(c.id, c.rev, []byte(c.body)); !errors.As(err, &bad) {
				t.Fatalf("got %v, want malformed", err)
			}
		})
	}
	var ign *webhook.Ignored
	if _, err := webhook.ParseSVN(repoUUID, "3", []byte("\n")); !errors.As(err, &ign) {
		t.Fatalf("an empty change list: %v, want ignored", err)
	}
}

func TestMatch(t *testing.T) {
	trig := &model.SCMTrigger{
		Push:               &model.PushTrigger{Stages: []string{"unitTest"}, Branches: []string{"master", "release/*", "refs/heads/hotfix-?"}},
		TagRelease:         &model.StagesTrigger{Stages: []string{"package"}},
		PullRequestComment: &model.CommentTrigger{Stages: []string{"codeCheckout"}, Comments: []string{"/retest", "ci: run *"}},
		PostCommit:         &model.StagesTrigger{Stages: []string{"unitTest", "package"}},
	}
	tests := []struct {
		name    string
		ev      webhook.Event
		svnPath string
		stages  []string // nil: ignored
	}{
		{"push master", webhook.Event{Kind: webhook.KindPush, Branch: "master"}, "", []string{"unitTest"}},
		{"push glob", webhook.Event{Kind: webhook.KindPush, Branch: "release/1.0"}, "", []string{"unitTest"}},
		{"glob is one segment", webhook.Event{Kind: webhook.KindPush, Branch: "release/1.0/rc"}, "", nil},
		{"refs/heads pattern", webhook.Event{Kind: webhook.KindPush, Branch: "hotfix-1"}, "", []string{"unitTest"}},
		{"other branch", webhook.Event{Kind: webhook.KindPush, Branch: "feature"}, "", nil},
		{"tag", webhook.Event{Kind: webhook.KindTagRelease, Tag: "v1"}, "", []string{"package"}},
		{"no PR trigger", webhook.Event{Kind: webhook.KindPullRequest}, "", nil},
		{"comment exact", webhook.Event{Kind: webhook.KindPullRequestComment, Comment: "  /retest\n"}, "", []string{"codeCheckout"}},
		{"comment glob", webhook.Event{Kind: webhook.KindPullRequestComment, Comment: "ci: run all\nplease"}, "", []string{"codeCheckout"}},
		{"comment other", webhook.Event{Kind: webhook.KindPullRequestComment, Comment: "/retest please"}, "", nil},
		{"comment regex is literal", webhook.Event{Kind: webhook.KindPullRequestComment, Comment: "/retes."}, "", nil},
		{"svn under", webhook.Event{Kind: webhook.KindPostCommit, ChangedPaths: []string{"docs/a", "cyclone/trunk/x.go"}}, "/cyclone/trunk/", []string{"unitTest", "package"}},
		{"svn dir itself", webhook.Event{Kind: webhook.KindPostCommit, ChangedPaths: []string{"cyclone/trunk/"}}, "cyclone/trunk", []string{"unitTest", "package"}},
		{"svn sibling prefix", webhook.Event{Kind: webhook.KindPostCommit, ChangedPaths: []string{"cyclone/trunk2/x.go"}}, "cyclone/trunk", nil},
		{"svn whole repo", webhook.Event{Kind: webhook.KindPostCommit, ChangedPaths: []string{"x"}}, "", []string{"unitTest", "package"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := webhook.Match(trig, &tt.ev, tt.svnPath)
			if tt.stages == nil {
				if d.Run || d.Reason == "" {
					t.Fatalf("got %+v, want ignored with a reason", d)
				}
				return
			}
			if !d.Run || !reflect.DeepEqual(d.Stages, tt.stages) {
				t.Fatalf("got %+v, want stages %q", d, tt.stages)
			}
		})
	}
	if d := webhook.Match(nil, &webhook.Event{Kind: webhook.KindPush}, ""); d.Run {
		t.Error("no scmTrigger ran")
	}
	if !webhook.BranchMatches(nil, "anything") {
		t.Error("no branch pattern must match every branch")
	}
	if webhook.CheckBranchPattern("[") || !webhook.CheckBranchPattern("release/*") {
		t.Error("CheckBranchPattern")
	}
}

func TestSignatures(t *testing.T) {
	body := []byte(`{"zen":"x"}`)
	sig := webhook.SignGitHub("s3cret", body)
	if err := webhook.VerifyGitHub("s3cret", sig, "", body); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		secret, sig256, sha1 string
		want                 error
	}{
		"other secret": {"other", sig, "", webhook.ErrBadSignature},
		"missing":      {"s3cret", "", "", webhook.ErrMissingSignature},
		"sha1 only":    {"s3cret", "", "sha1=abcdef", webhook.ErrSHA1Only},
		"not hex":      {"s3cret", "sha256=zz", "", webhook.ErrBadSignature},
		"no prefix":    {"s3cret", strings.TrimPrefix(sig, "sha256="), "", webhook.ErrBadSignature},
		"sha1 prefix":  {"s3cret", "sha1=" + strings.TrimPrefix(sig, "sha256="), "", webhook.ErrBadSignature},
		"no secret":    {"", sig, "", webhook.ErrNoSecret},
	} {
		if err := webhook.VerifyGitHub(c.secret, c.sig256, c.sha1, body); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	if err := webhook.VerifyGitHub("s3cret", sig, "", append(body, ' ')); !errors.Is(err, webhook.ErrBadSignature) {
		t.Errorf("changed body: %v", err)
	}
	if webhook.VerifyGitLab("tok", "tok") != nil || webhook.VerifyGitLab("tok", "tok2") == nil ||
		webhook.VerifyGitLab("tok", "") == nil || webhook.VerifyGitLab("", "") == nil {
		t.Error("VerifyGitLab")
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	tok := webhook.SVNToken(key, repoUUID)
	if webhook.VerifySVN(key, strings.ToUpper(repoUUID), tok) != nil || webhook.VerifySVN(key, repoUUID, tok[1:]) == nil ||
		webhook.VerifySVN([]byte("other"), repoUUID, tok) == nil || webhook.VerifySVN(key, "b"+repoUUID[1:], tok) == nil {
		t.Error("VerifySVN")
	}
}

func TestRecordID(t *testing.T) {
	a := &webhook.Event{Kind: webhook.KindPush, DeliveryID: "d1", Repo: "o/r"}
	b := &webhook.Event{Kind: webhook.KindPush, DeliveryID: "d2", Repo: "o/r"}
	again := *a
	if webhook.RecordID("p", a) != webhook.RecordID("p", &again) || webhook.RecordID("p", a) == webhook.RecordID("p", b) ||
		webhook.RecordID("p", a) == webhook.RecordID("q", a) {
		t.Error("RecordID is not a function of pipeline and delivery")
	}
	if id := webhook.RecordID("p", a); !strings.HasPrefix(id, "wh-") || len(id) != 23 {
		t.Errorf("record ID %q", id)
	}
	// Push, create and release of one tag are one build.
	t1 := &webhook.Event{Kind: webhook.KindTagRelease, Repo: "o/r", Tag: "v1", DeliveryID: "d1"}
	t2 := &webhook.Event{Kind: webhook.KindTagRelease, Repo: "o/r", Tag: "v1", DeliveryID: "d2"}
	if webhook.RecordID("p", t1) != webhook.RecordID("p", t2) {
		t.Error("two deliveries of one tag start two records")
	}
}

// On a public repository anyone may comment: only the repository's owners, members
// and collaborators trigger with a comment.
func TestGitHubCommentAuthor(t *testing.T) {
	body := string(seed(t, "github_issue_comment.json"))
	for assoc, trusted := range map[string]bool{"OWNER": true, "MEMBER": true, "COLLABORATOR": true,
		"CONTRIBUTOR": false, "FIRST_TIME_CONTRIBUTOR": false, "NONE": false} {
		payload := strings.Replace(body, `"author_association": "OWNER"`, `"author_association": "`+assoc+`"`, 1)
		ev, err := webhook.ParseGitHub("issue_comment", "d", []byte(payload))
		var ign *webhook.Ignored
		switch {
		case trusted && (err != nil || ev.Kind != webhook.KindPullRequestComment):
			t.Errorf("%s: %v %v", assoc, ev, err)
		case !trusted && !errors.As(err, &ign):
			t.Errorf("%s: a comment of an outsider was not ignored: %v %v", assoc, ev, err)
		}
	}
	noAssoc := strings.Replace(body, `"author_association": "OWNER",`, ``, 1)
	var ign *webhook.Ignored
	if _, err := webhook.ParseGitHub("issue_comment", "d", []byte(noAssoc)); !errors.As(err, &ign) {
		t.Errorf("a comment without author_association: %v", err)
	}
}

// A pull request from a fork runs code from outside the repository: it does not
// trigger by itself.
func TestForkPullRequestsIgnored(t *testing.T) {
	gh := string(seed(t, "github_pull_request.json"))
	fork := strings.Replace(gh, `"full_name": "baxterthehacker/public-repo"}`, `"full_name": "mallory/public-repo"}`, 1)
	if fork == gh {
		t.Fatal("the seed payload changed: no head repository to fork")
	}
	var ign *webhook.Ignored
	if _, err := webhook.ParseGitHub("pull_request", "d", []byte(fork)); !errors.As(err, &ign) || !strings.Contains(ign.Reason, "fork") {
		t.Fatalf("a fork's pull request: %v", err)
	}
	if ev, err := webhook.ParseGitHub("pull_request", "d", []byte(gh)); err != nil || ev.Kind != webhook.KindPullRequest {
		t.Fatalf("a pull request within the repository: %v %v", ev, err)
	}
	gl := string(seed(t, "gitlab_merge_request.json"))
	glFork := strings.Replace(gl, `"source_project_id": 15,`, `"source_project_id": 99,`, 1)
	if glFork == gl {
		t.Fatal("the seed payload changed: no source project to fork")
	}
	if _, err := webhook.ParseGitLab("Merge Request Hook", "d", []byte(glFork)); !errors.As(err, &ign) || !strings.Contains(ign.Reason, "fork") {
		t.Fatalf("a fork's merge request: %v", err)
	}
	if ev, err := webhook.ParseGitLab("Merge Request Hook", "d", []byte(gl)); err != nil || ev.Kind != webhook.KindPullRequest {
		t.Fatalf("a merge request within the project: %v %v", ev, err)
	}
	// A comment on a fork's merge request would run the fork's code all the same:
	// GitLab's note does not tell what its author may do in the project.
	note := string(seed(t, "gitlab_note.json"))
	noteFork := strings.Replace(note, `"source_project_id": 5,`, `"source_project_id": 99,`, 1)
	if noteFork == note {
		t.Fatal("the seed payload changed: no source project to fork")
	}
	if _, err := webhook.ParseGitLab("Note Hook", "d", []byte(noteFork)); !errors.As(err, &ign) || !strings.Contains(ign.Reason, "fork") {
		t.Fatalf("a comment on a fork's merge request: %v", err)
	}
	if ev, err := webhook.ParseGitLab("Note Hook", "d", []byte(note)); err != nil || ev.Kind != webhook.KindPullRequestComment {
		t.Fatalf("a comment on a merge request within the project: %v %v", ev, err)
	}
}
