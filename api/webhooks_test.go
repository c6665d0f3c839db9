package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // GitHub's legacy X-Hub-Signature, sent to check that it is refused
	"encoding/hex"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/internal/webhook"
)

// Seed payloads of the parsers' fuzz targets: real-shaped GitHub and GitLab JSON.
func hookPayload(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "internal", "webhook", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const hookSecret = "pipeline-webhook-s3cr3t"

// hookPipelineBody builds a pipeline of the given main code source with an scmTrigger.
func hookPipelineBody(name string, source map[string]any, trigger map[string]any, extra map[string]any) map[string]any {
	b := map[string]any{"name": name,
		"autoTrigger": map[string]any{"scmTrigger": trigger},
		"build": map[string]any{
			"builderImage": map[string]any{"image": "x"},
			"stages": map[string]any{
				"codeCheckout": map[string]any{"codeSources": []any{source}},
				"unitTest":     map[string]any{"command": []string{"echo unit"}},
				"package":      map[string]any{"command": []string{"echo package"}},
			},
		}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

// deliver posts a webhook delivery without a bearer token, with the given headers.
func deliver(env *testenv.Env, path string, body []byte, header ...string) *testenv.Response {
	return env.Do("POST", path, body, append([]string{"Authorization", ""}, header...)...)
}

func githubHeaders(event, delivery, secret string, body []byte) []string {
	h := []string{"X-GitHub-Event", event, "X-GitHub-Delivery", delivery}
	if secret != "" {
		h = append(h, "X-Hub-Signature-256", webhook.SignGitHub(secret, body))
	}
	return h
}

type hookAnswer struct {
	Message  string   `json:"message"`
	RecordID string   `json:"recordID"`
	Records  []string `json:"records"`
}

func wantHook(t *testing.T, r *testenv.Response, contains string) hookAnswer {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var a hookAnswer
	r.JSON(t, &a)
	if !strings.Contains(a.Message, contains) {
		t.Fatalf("message %q, want it to contain %q", a.Message, contains)
	}
	return a
}

func pipelineRecords(t *testing.T, env *testenv.Env, pipelineID string) []*model.Record {
	t.Helper()
	recs, _, err := env.Store.ListRecords(context.Background(), pipelineID, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func createHookPipeline(t *testing.T, env *testenv.Env, project string, body map[string]any) model.Pipeline {
	t.Helper()
	r := env.Do("POST", "/api/v1/projects/"+project+"/pipelines", body)
	wantStatus(t, r, http.StatusCreated)
	var p model.Pipeline
	r.JSON(t, &p)
	return p
}

// GitHub and GitLab deliveries against the real server: signatures, triggers,
// redeliveries, bad input and a Temporal outage.
func TestWebhookDeliveries(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	// No SCM credentials: nothing is registered, the webhooks are added by hand.
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("hooks", "Github", "https://github.com", nil)), http.StatusCreated)
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("labhooks", "Gitlab", "http://example.com", nil)), http.StatusCreated)

	gh := createHookPipeline(t, env, "hooks", hookPipelineBody("gh",
		map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": "https://github.com/baxterthehacker/public-repo.git", "ref": "refs/heads/master"}},
		map[string]any{
			"push":               map[string]any{"stages": []string{"unitTest"}, "branches": []string{"master", "chan*"}},
			"tagRelease":         map[string]any{"stages": []string{"package"}},
			"pullRequestComment": map[string]any{"stages": []string{"unitTest", "package"}, "comments": []string{"/retest"}},
		}, map[string]any{"webhookSecret": hookSecret}))
	if !gh.WebhookSecretSet || gh.WebhookSecret != "" || gh.Webhook == nil ||
		gh.Webhook.URL != env.URL+"/api/v1/pipelines/"+gh.ID+"/githubwebhook" || gh.Webhook.ID != "" {
		t.Fatalf("pipeline as created: secret set %v, secret %q, webhook %+v", gh.WebhookSecretSet, gh.WebhookSecret, gh.Webhook)
	}
	var got model.Pipeline
	r := env.Do("GET", "/api/v1/projects/hooks/pipelines/gh", nil)
	if strings.Contains(string(r.Body), hookSecret) {
		t.Fatalf("GET pipeline shows the webhook secret: %s", r.Body)
	}
	r.JSON(t, &got)
	if !got.WebhookSecretSet {
		t.Fatal("webhookSecretSet not shown")
	}
	ghPath := "/api/v1/pipelines/" + gh.ID + "/githubwebhook"
	push := hookPayload(t, "github_push.json")

	t.Run("github push", func(t *testing.T) {
		a := wantHook(t, deliver(env, ghPath, push, githubHeaders("push", "delivery-1", hookSecret, push)...), "triggered record")
		if !strings.HasPrefix(a.RecordID, "wh-") {
			t.Fatalf("record ID %q", a.RecordID)
		}
		var rec model.Record
		waitUntil(t, "the push record to succeed", func() bool {
			env.Do("GET", "/api/v1/projects/hooks/pipelines/gh/records/"+a.RecordID, nil).JSON(t, &rec)
			return rec.Status == model.StatusSuccess || rec.Status == model.StatusFailed
		})
		pp := rec.PerformParams
		if rec.Status != model.StatusSuccess || rec.Trigger != model.TriggerSCM || pp.Ref != "refs/heads/changes" ||
			pp.Commit != "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c" || strings.Join(pp.Stages, ",") != "unitTest" ||
			rec.StageStatus.UnitTest == nil || rec.StageStatus.Package != nil {
			t.Fatalf("record %+v, params %+v", rec, pp)
		}

		// The same delivery again starts nothing.
		b := wantHook(t, deliver(env, ghPath, push, githubHeaders("push", "delivery-1", hookSecret, push)...), "already triggered")
		if b.RecordID != a.RecordID || len(pipelineRecords(t, env, gh.ID)) != 1 {
			t.Fatalf("redelivery: %+v; %d records", b, len(pipelineRecords(t, env, gh.ID)))
		}
	})

	t.Run("github signatures", func(t *testing.T) {
		sha1Sig := func(body []byte) string {
			m := hmac.New(sha1.New, []byte(hookSecret))
			m.Write(body)
			return "sha1=" + hex.EncodeToString(m.Sum(nil))
		}
		tampered := bytes.Replace(push, []byte("refs/heads/changes"), []byte("refs/heads/master"), 1)
		cases := map[string][]string{
			"unsigned":       githubHeaders("push", "delivery-u", "", push),
			"wrongly signed": githubHeaders("push", "delivery-w", "another-secret-entirely", push),
			"sha1 only":      append(githubHeaders("push", "delivery-s", "", push), "X-Hub-Signature", sha1Sig(push)),
			"garbage":        append(githubHeaders("push", "delivery-g", "", push), "X-Hub-Signature-256", "sha256=zzzz"),
		}
		for name, h := range cases {
			r := deliver(env, ghPath, push, h...)
			wantError(t, r, http.StatusUnauthorized, api.ReasonUnauthorized, "")
			if name == "sha1 only" && !strings.Contains(string(r.Body), "SHA-1") {
				t.Errorf("sha1 only: %s does not say why", r.Body)
			}
		}
		// A body changed after signing.
		r := deliver(env, ghPath, tampered, githubHeaders("push", "delivery-t", hookSecret, push)...)
		wantError(t, r, http.StatusUnauthorized, api.ReasonUnauthorized, "")
		// A bearer token is no substitute for the signature.
		r = env.Do("POST", ghPath, push, "X-GitHub-Event", "push", "X-GitHub-Delivery", "delivery-b")
		wantError(t, r, http.StatusUnauthorized, api.ReasonUnauthorized, "")
		if n := len(pipelineRecords(t, env, gh.ID)); n != 1 {
			t.Fatalf("%d records after refused deliveries, want 1", n)
		}
	})

	t.Run("github body limits", func(t *testing.T) {
		// Over the API's 1 MB limit but within the webhooks' 25 MB: accepted.
		trimmed := bytes.TrimSpace(push)
		big := append(append([]byte{}, trimmed[:len(trimmed)-1]...), []byte(`, "padding": "`+strings.Repeat("x", 2<<20)+`"}`)...)
		wantHook(t, deliver(env, ghPath, big, githubHeaders("push", "delivery-big", hookSecret, big)...), "triggered record")
		huge := bytes.Repeat([]byte(" "), api.WebhookBodyMax+1)
		r := deliver(env, ghPath, huge, githubHeaders("push", "delivery-huge", hookSecret, huge)...)
		wantError(t, r, http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "")
	})

	t.Run("github events", func(t *testing.T) {
		ping := hookPayload(t, "github_ping.json")
		wantHook(t, deliver(env, ghPath, ping, githubHeaders("ping", "delivery-p", hookSecret, ping)...), "pong")

		other := bytes.Replace(push, []byte("refs/heads/changes"), []byte("refs/heads/feature-x"), 1)
		before := len(pipelineRecords(t, env, gh.ID))
		wantHook(t, deliver(env, ghPath, other, githubHeaders("push", "delivery-o", hookSecret, other)...), `ignored: branch "feature-x" matches none`)

		pr := hookPayload(t, "github_pull_request.json")
		wantHook(t, deliver(env, ghPath, pr, githubHeaders("pull_request", "delivery-pr", hookSecret, pr)...), "no pullRequest trigger")

		deleted := hookPayload(t, "github_push_deleted.json")
		wantHook(t, deliver(env, ghPath, deleted, githubHeaders("push", "delivery-d", hookSecret, deleted)...), "deleted")

		comment := hookPayload(t, "github_issue_comment.json")
		a := wantHook(t, deliver(env, ghPath, comment, githubHeaders("issue_comment", "delivery-c", hookSecret, comment)...), "triggered record")
		rec, err := env.Store.GetRecord(context.Background(), gh.ID, a.RecordID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.PerformParams.Ref != "refs/pull/1/head" || strings.Join(rec.PerformParams.Stages, ",") != "unitTest,package" || rec.Trigger != model.TriggerSCM {
			t.Fatalf("comment record %+v %+v", rec, rec.PerformParams)
		}
		chatter := bytes.Replace(comment, []byte(`"body": "/retest"`), []byte(`"body": "looks good to me"`), 1)
		wantHook(t, deliver(env, ghPath, chatter, githubHeaders("issue_comment", "delivery-c2", hookSecret, chatter)...), "matches none")

		// One tag, three events: one record.
		tag := hookPayload(t, "github_push_tag.json")
		create := hookPayload(t, "github_create_tag.json")
		release := hookPayload(t, "github_release.json")
		first := wantHook(t, deliver(env, ghPath, tag, githubHeaders("push", "delivery-t1", hookSecret, tag)...), "triggered record")
		for i, ev := range []struct {
			name string
			body []byte
		}{{"create", create}, {"release", release}} {
			again := wantHook(t, deliver(env, ghPath, ev.body, githubHeaders(ev.name, "delivery-t"+string(rune('2'+i)), hookSecret, ev.body)...), "already triggered")
			if again.RecordID != first.RecordID {
				t.Fatalf("%s of the same tag: record %s, want %s", ev.name, again.RecordID, first.RecordID)
			}
		}
		if n := len(pipelineRecords(t, env, gh.ID)); n != before+2 {
			t.Fatalf("%d records, want %d (comment and tag)", n, before+2)
		}
	})

	t.Run("github bad input is 4xx", func(t *testing.T) {
		before := len(pipelineRecords(t, env, gh.ID))
		otherRepo := bytes.ReplaceAll(push, []byte("baxterthehacker/public-repo"), []byte("mallory/public-repo"))
		r := deliver(env, ghPath, otherRepo, githubHeaders("push", "delivery-x", hookSecret, otherRepo)...)
		wantError(t, r, http.StatusBadRequest, api.ReasonInvalidField, "repository")
		for _, body := range []string{"{", "[]", `{"ref": 5}`, `{"ref":"refs/heads/master","after":"nothex","repository":{"full_name":"a/b"}}`, "null", ""} {
			b := []byte(body)
			r := deliver(env, ghPath, b, githubHeaders("push", "delivery-m", hookSecret, b)...)
			if r.Status < 400 || r.Status >= 500 {
				t.Errorf("%q: status %d, want 4xx; %s", body, r.Status, r.Body)
			}
		}
		r = deliver(env, ghPath, push, githubHeaders("", "delivery-n", hookSecret, push)...)
		wantError(t, r, http.StatusBadRequest, api.ReasonInvalidField, "X-GitHub-Event")
		r = deliver(env, "/api/v1/pipelines/no-such-pipeline/githubwebhook", push, githubHeaders("push", "delivery-1", hookSecret, push)...)
		wantError(t, r, http.StatusNotFound, api.ReasonNotFound, "")
		if n := len(pipelineRecords(t, env, gh.ID)); n != before {
			t.Fatalf("bad deliveries made records: %d, want %d", n, before)
		}
	})

	lab := createHookPipeline(t, env, "labhooks", hookPipelineBody("lab",
		map[string]any{"type": "Gitlab", "main": true, "gitLab": map[string]any{"url": "http://example.com/mike/diaspora.git", "ref": "refs/heads/master"}},
		map[string]any{
			"push":               map[string]any{"stages": []string{"unitTest"}},
			"pullRequest":        map[string]any{"stages": []string{"package"}},
			"pullRequestComment": map[string]any{"stages": []string{"unitTest"}, "comments": []string{"/re*"}},
		}, map[string]any{"webhookSecret": hookSecret}))
	labPath := "/api/v1/pipelines/" + lab.ID + "/gitlabwebhook"

	t.Run("gitlab", func(t *testing.T) {
		glPush := hookPayload(t, "gitlab_push.json")
		wantError(t, deliver(env, labPath, glPush, "X-Gitlab-Event", "Push Hook"), http.StatusUnauthorized, api.ReasonUnauthorized, "")
		wantError(t, deliver(env, labPath, glPush, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", "wrong-token"), http.StatusUnauthorized, api.ReasonUnauthorized, "")

		a := wantHook(t, deliver(env, labPath, glPush, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hookSecret, "X-Gitlab-Event-UUID", "u-1"), "triggered record")
		wantHook(t, deliver(env, labPath, glPush, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hookSecret, "X-Gitlab-Event-UUID", "u-1"), "already triggered")
		// Without an event UUID, repository+ref+commit name the change.
		b := wantHook(t, deliver(env, labPath, glPush, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hookSecret), "triggered record")
		wantHook(t, deliver(env, labPath, glPush, "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hookSecret), "already triggered")
		if a.RecordID == b.RecordID {
			t.Fatal("deliveries with and without a UUID share a record")
		}

		mr := hookPayload(t, "gitlab_merge_request.json")
		c := wantHook(t, deliver(env, labPath, mr, "X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", hookSecret, "X-Gitlab-Event-UUID", "u-2"), "triggered record")
		rec, err := env.Store.GetRecord(context.Background(), lab.ID, c.RecordID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.PerformParams.Ref != "refs/merge-requests/1/head" || strings.Join(rec.PerformParams.Stages, ",") != "package" {
			t.Fatalf("merge request record %+v", rec.PerformParams)
		}
		noCommits := bytes.Replace(mr, []byte(`"action": "open"`), []byte(`"action": "update"`), 1)
		wantHook(t, deliver(env, labPath, noCommits, "X-Gitlab-Event", "Merge Request Hook", "X-Gitlab-Token", hookSecret, "X-Gitlab-Event-UUID", "u-3"), "without new commits")
		note := hookPayload(t, "gitlab_note.json")
		wantHook(t, deliver(env, labPath, note, "X-Gitlab-Event", "Note Hook", "X-Gitlab-Token", hookSecret, "X-Gitlab-Event-UUID", "u-4"), "triggered record")

		for _, body := range []string{"{", `{"object_kind":"push"}`, `{"object_kind":"push","project":{"path_with_namespace":"mike/diaspora"},"ref":"refs/heads/x","after":"zz"}`} {
			r := deliver(env, labPath, []byte(body), "X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", hookSecret)
			if r.Status < 400 || r.Status >= 500 {
				t.Errorf("%q: status %d, want 4xx; %s", body, r.Status, r.Body)
			}
		}
		if n := len(pipelineRecords(t, env, lab.ID)); n != 4 {
			t.Fatalf("%d GitLab records, want 4", n)
		}
	})

	t.Run("mangled payloads are never 5xx", func(t *testing.T) {
		rnd := rand.New(rand.NewSource(6))
		for _, c := range []struct{ file, event string }{
			{"github_push.json", "push"}, {"github_issue_comment.json", "issue_comment"}, {"github_release.json", "release"},
			{"github_pull_request.json", "pull_request"}, {"github_create_tag.json", "create"},
			{"gitlab_push.json", "Push Hook"}, {"gitlab_note.json", "Note Hook"}, {"gitlab_merge_request.json", "Merge Request Hook"},
		} {
			seed := hookPayload(t, c.file)
			for i := 0; i < 25; i++ {
				b := append([]byte{}, seed...)
				switch i % 3 {
				case 0: // truncated
					b = b[:rnd.Intn(len(b))]
				case 1: // bytes overwritten
					for k := 0; k < 1+rnd.Intn(6); k++ {
						b[rnd.Intn(len(b))] = byte(rnd.Intn(256))
					}
				case 2: // a value's type changed
					b = bytes.Replace(b, []byte(`": "`), []byte(`": [`), 1+rnd.Intn(3))
				}
				var r *testenv.Response
				if strings.HasPrefix(c.file, "github") {
					r = deliver(env, ghPath, b, githubHeaders(c.event, "mangled", hookSecret, b)...)
				} else {
					r = deliver(env, labPath, b, "X-Gitlab-Event", c.event, "X-Gitlab-Token", hookSecret)
				}
				if r.Status >= 500 {
					t.Fatalf("%s mangled: %d %s\n%s", c.file, r.Status, r.Body, b)
				}
			}
		}
	})

	t.Run("temporal unreachable", func(t *testing.T) {
		env.StopTemporal()
		before := len(pipelineRecords(t, env, gh.ID))
		r := deliver(env, ghPath, push, githubHeaders("push", "delivery-outage", hookSecret, push)...)
		wantError(t, r, http.StatusServiceUnavailable, api.ReasonUnavailable, "")
		if n := len(pipelineRecords(t, env, gh.ID)); n != before {
			t.Fatalf("a failed start left a record: %d, want %d", n, before)
		}
	})
}

// A post-commit hook of a real repository (svnserve, svnlook) starts the pipelines
// whose path the revision changed, which check that revision out.
func TestSVNPostCommit(t *testing.T) {
	svn := testenv.StartSVNServer(t, "alice", "svn-s3cr3t")
	env := testenv.Start(t, testenv.Options{})
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("svnhooks", "SVN", svn.URL,
		map[string]any{"username": "alice", "password": "svn-s3cr3t"})), http.StatusCreated)
	source := map[string]any{"type": "SVN", "main": true, "otherCodeSource": map[string]any{"url": svn.URL, "path": "proj/trunk"}}
	trigger := map[string]any{"postCommit": map[string]any{"stages": []string{"codeCheckout", "unitTest"}}}

	// The repository UUID is required with a postCommit trigger.
	r := env.Do("POST", "/api/v1/projects/svnhooks/pipelines", hookPipelineBody("svn", source, trigger, nil))
	wantError(t, r, http.StatusBadRequest, api.ReasonInvalidField, "svnRepoID")
	r = env.Do("POST", "/api/v1/projects/svnhooks/pipelines", hookPipelineBody("svn", source, trigger, map[string]any{"svnRepoID": "not-a-uuid"}))
	wantError(t, r, http.StatusBadRequest, api.ReasonInvalidField, "svnRepoID")

	p := createHookPipeline(t, env, "svnhooks", hookPipelineBody("svn", source, trigger, map[string]any{"svnRepoID": strings.ToUpper(svn.UUID)}))
	if p.Webhook == nil || !strings.Contains(p.Webhook.URL, "/api/v1/subversion/"+svn.UUID+"/postcommithook?token=") {
		t.Fatalf("the created pipeline does not show its hook URL: %+v", p.Webhook)
	}
	hookURL, err := url.Parse(p.Webhook.URL)
	if err != nil {
		t.Fatal(err)
	}
	token := hookURL.Query().Get("token")
	if r := env.Do("GET", "/api/v1/projects/svnhooks/pipelines/svn", nil); strings.Contains(string(r.Body), token) {
		t.Fatalf("GET pipeline shows the hook token: %s", r.Body)
	}
	hook := func(rev, tok string) string {
		return "/api/v1/subversion/" + svn.UUID + "/postcommithook?revision=" + rev + "&token=" + url.QueryEscape(tok)
	}
	text := "Content-Type"

	rev := svn.Commit("inside", map[string]string{"proj/trunk/main.go": "package main\n", "docs/readme": "x"})
	changed := []byte(svn.Changed(rev))
	if !bytes.Contains(changed, []byte("proj/trunk/main.go")) {
		t.Fatalf("svnlook changed: %s", changed)
	}
	wantError(t, deliver(env, hook(rev, "wrong"), changed, text, "text/plain"), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	wantError(t, deliver(env, hook(rev, ""), changed, text, "text/plain"), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	a := wantHook(t, deliver(env, hook(rev, token), changed, text, "text/plain"), "triggered records")
	if len(a.Records) != 1 {
		t.Fatalf("answer %+v", a)
	}
	var rec model.Record
	waitUntil(t, "the post-commit record to end", func() bool {
		env.Do("GET", "/api/v1/projects/svnhooks/pipelines/svn/records/"+a.Records[0], nil).JSON(t, &rec)
		return model.IsTerminal(rec.Status)
	})
	co := rec.StageStatus.CodeCheckout
	if rec.Status != model.StatusSuccess || rec.Trigger != model.TriggerSCM || rec.PerformParams.Ref != rev ||
		strings.Join(rec.PerformParams.Stages, ",") != "codeCheckout,unitTest" || co == nil || co.Commits == nil || co.Commits.MainRepo.ID != rev {
		t.Fatalf("svn record %+v %+v (%s)", rec, rec.PerformParams, rec.ErrorMessage)
	}
	wantHook(t, deliver(env, hook(rev, token), changed, text, "text/plain"), "already triggered")

	// A revision outside the pipeline's path starts nothing.
	rev2 := svn.Commit("outside", map[string]string{"proj/trunk2/other.go": "x", "docs/more": "y"})
	wantHook(t, deliver(env, hook(rev2, token), []byte(svn.Changed(rev2)), text, "text/plain"), `changed nothing under "proj/trunk"`)

	wantError(t, deliver(env, hook("", token), changed, text, "text/plain"), http.StatusBadRequest, api.ReasonInvalidField, "revision")
	wantError(t, deliver(env, hook(rev, token), []byte("not svnlook output"), text, "text/plain"), http.StatusBadRequest, api.ReasonInvalidField, "body")
	if n := len(pipelineRecords(t, env, p.ID)); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// forbiddingGitHub fronts the fake GitHub: while forbid is set it answers creating a
// hook as GitHub does a token without admin rights on the repository.
func forbiddingGitHub(t *testing.T, gh *testenv.GitHub, forbid *atomic.Bool) *httptest.Server {
	t.Helper()
	target, err := url.Parse(gh.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if forbid.Load() && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/hooks") {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"message":"Must have admin rights to Repository.","documentation_url":"https://docs.github.com/rest/repos/webhooks#create-a-repository-webhook"}`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestWebhookRegistration(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	ctx := context.Background()
	gh := testenv.StartGitHub(t, "tok-admin-s3cr3t")
	gh.AddRepo("octo/hello", testenv.GitHubRepo{Branches: []string{"master"}})
	var forbid atomic.Bool
	front := forbiddingGitHub(t, gh, &forbid)
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("reg", "Github", front.URL,
		map[string]any{"username": "bot", "token": "tok-admin-s3cr3t"})), http.StatusCreated)
	source := map[string]any{"type": "Github", "main": true, "gitHub": map[string]any{"url": front.URL + "/octo/hello.git", "ref": "refs/heads/master"}}
	push := map[string]any{"push": map[string]any{"stages": []string{"unitTest"}}}
	base := "/api/v1/projects/reg/pipelines"

	p := createHookPipeline(t, env, "reg", hookPipelineBody("app", source, push, nil))
	hooks := gh.Hooks("octo/hello")
	if len(hooks) != 1 || p.Webhook == nil || p.Webhook.ID == "" || p.Webhook.Repo != "octo/hello" {
		t.Fatalf("hooks %v, pipeline webhook %+v", hooks, p.Webhook)
	}
	secret, err := env.Store.PipelineWebhookSecret(ctx, p.ID)
	if err != nil || len(secret) < 32 {
		t.Fatalf("generated secret %q: %v", secret, err)
	}
	var cfg map[string]any
	for _, h := range hooks {
		cfg, _ = h["config"].(map[string]any)
	}
	if cfg["url"] != env.URL+"/api/v1/pipelines/"+p.ID+"/githubwebhook" || cfg["secret"] != secret || cfg["content_type"] != "json" {
		t.Fatalf("registered hook config %v", cfg)
	}
	// The registered secret signs deliveries the server accepts.
	ping := hookPayload(t, "github_ping.json")
	wantHook(t, deliver(env, "/api/v1/pipelines/"+p.ID+"/githubwebhook", ping, githubHeaders("ping", "d", secret, ping)...), "pong")

	// An update that changes nothing the hook depends on keeps it.
	body := hookPipelineBody("app", source, push, map[string]any{"description": "same hook"})
	r := env.Do("PUT", base+"/app", body)
	wantStatus(t, r, http.StatusOK)
	var up model.Pipeline
	r.JSON(t, &up)
	if up.Webhook == nil || up.Webhook.ID != p.Webhook.ID || len(gh.Hooks("octo/hello")) != 1 {
		t.Fatalf("unchanged update: webhook %+v, hooks %v", up.Webhook, gh.Hooks("octo/hello"))
	}
	// More events: a new hook replaces the old one.
	more := map[string]any{"push": push["push"], "pullRequest": map[string]any{"stages": []string{"package"}}}
	r = env.Do("PUT", base+"/app", hookPipelineBody("app", source, more, nil))
	wantStatus(t, r, http.StatusOK)
	r.JSON(t, &up)
	hooks = gh.Hooks("octo/hello")
	if up.Webhook == nil || up.Webhook.ID == p.Webhook.ID || len(hooks) != 1 || strings.Join(up.Webhook.Events, ",") != "pullRequest,push" {
		t.Fatalf("update with more events: webhook %+v, hooks %v", up.Webhook, hooks)
	}
	// No scmTrigger: no hook.
	noTrigger := hookPipelineBody("app", source, nil, nil)
	delete(noTrigger, "autoTrigger")
	r = env.Do("PUT", base+"/app", noTrigger)
	wantStatus(t, r, http.StatusOK)
	up = model.Pipeline{}
	r.JSON(t, &up)
	if up.Webhook != nil || len(gh.Hooks("octo/hello")) != 0 {
		t.Fatalf("update without trigger: webhook %+v, hooks %v", up.Webhook, gh.Hooks("octo/hello"))
	}

	// Without admin rights: the spec's error, and nothing saved or registered.
	forbid.Store(true)
	r = env.Do("PUT", base+"/app", hookPipelineBody("app", source, push, map[string]any{"description": "wants a hook"}))
	wantError(t, r, http.StatusForbidden, api.ReasonCreateWebhookPermissionDenied, "")
	var still model.Pipeline
	env.Do("GET", base+"/app", nil).JSON(t, &still)
	if still.AutoTrigger != nil || still.Description == "wants a hook" || still.Webhook != nil {
		t.Fatalf("a refused update was saved: %+v", still)
	}
	r = env.Do("POST", base, hookPipelineBody("denied", source, push, nil))
	wantError(t, r, http.StatusForbidden, api.ReasonCreateWebhookPermissionDenied, "")
	wantStatus(t, env.Do("GET", base+"/denied", nil), http.StatusNotFound)
	if _, total, _ := env.Store.ListPipelines(ctx, p.ProjectID, store.ListOptions{}); total != 1 || len(gh.Hooks("octo/hello")) != 0 {
		t.Fatalf("after refusals: %d pipelines, hooks %v", total, gh.Hooks("octo/hello"))
	}
	forbid.Store(false)

	// Deleting the pipeline removes its hook.
	createHookPipeline(t, env, "reg", hookPipelineBody("gone", source, push, nil))
	if len(gh.Hooks("octo/hello")) != 1 {
		t.Fatalf("hooks %v", gh.Hooks("octo/hello"))
	}
	wantStatus(t, env.Do("DELETE", base+"/gone", nil), http.StatusNoContent)
	if len(gh.Hooks("octo/hello")) != 0 {
		t.Fatalf("hook left after delete: %v", gh.Hooks("octo/hello"))
	}
}
