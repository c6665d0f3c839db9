package api_test

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/starter"
)

func scmProject(name, typ, server string, creds map[string]any) map[string]any {
	s := map[string]any{"type": typ, "server": server}
	for k, v := range creds {
		s[k] = v
	}
	return map[string]any{"name": name, "scm": s}
}

func TestProjectSCMCredentialsVerified(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	gh := testenv.StartGitHub(t, "tok-good-s3cr3t")

	cases := []struct {
		name   string
		body   map[string]any
		status int
		reason string
		field  string
	}{
		{"refused token", scmProject("p1", "Github", gh.URL, map[string]any{"username": "bot", "token": "tok-wrong-s3cr3t"}),
			http.StatusBadRequest, api.ReasonInvalidField, "scm.token"},
		{"refused password", scmProject("p2", "Github", gh.URL, map[string]any{"username": "bot", "password": "hunter2-s3cr3t"}),
			http.StatusBadRequest, api.ReasonInvalidField, "scm.password"},
		{"unreachable server", scmProject("p3", "Github", "http://127.0.0.1:1", map[string]any{"username": "bot", "token": "tok-good-s3cr3t"}),
			http.StatusBadGateway, api.ReasonSCMUnreachable, ""},
		{"metadata address", scmProject("p4", "Github", "http://169.254.169.254", map[string]any{"username": "bot", "token": "tok-good-s3cr3t"}),
			http.StatusBadRequest, api.ReasonInvalidField, "scm.server"},
		{"metadata address without credentials", scmProject("p5", "Gitlab", "http://169.254.169.254/", nil),
			http.StatusBadRequest, api.ReasonInvalidField, "scm.server"},
		{"file scheme", scmProject("p6", "Github", "file:///etc", map[string]any{"username": "bot", "token": "tok-good-s3cr3t"}),
			http.StatusBadRequest, api.ReasonInvalidField, "scm.server"},
		{"GitHub token without username", scmProject("p7", "Github", gh.URL, map[string]any{"token": "tok-good-s3cr3t"}),
			http.StatusBadRequest, api.ReasonInvalidField, "scm.username"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := env.Do("POST", "/api/v1/projects", tc.body)
			wantError(t, r, tc.status, tc.reason, tc.field)
			if strings.Contains(string(r.Body), "s3cr3t") {
				t.Fatalf("the answer echoes a secret: %s", r.Body)
			}
		})
	}
	if n := countProjects(t, env); n != 0 {
		t.Fatalf("%d projects saved from refused requests", n)
	}

	// Good credentials are saved; an update with refused ones changes nothing.
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("ok", "Github", gh.URL, map[string]any{"username": "bot", "token": "tok-good-s3cr3t"})), http.StatusCreated)
	wantError(t, env.Do("PUT", "/api/v1/projects/ok", scmProject("ok", "Github", gh.URL, map[string]any{"username": "bot", "token": "tok-bad"})),
		http.StatusBadRequest, api.ReasonInvalidField, "scm.token")
	p, err := env.Store.GetProject(context.Background(), "ok")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := env.Store.ProjectCredentials(context.Background(), p.ID)
	if err != nil || creds.SCMToken != "tok-good-s3cr3t" {
		t.Fatalf("stored token changed by a refused update: %v", err)
	}
	// An update that leaves the token out keeps the stored one, checked when given.
	wantStatus(t, env.Do("PUT", "/api/v1/projects/ok", scmProject("ok", "Github", gh.URL, map[string]any{"username": "bot", "description": "x"})), http.StatusOK)
}

func TestSCMReposBranchesTags(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	gh := testenv.StartGitHub(t, "tok-list")
	gh.AddRepo("acme/api", testenv.GitHubRepo{Branches: []string{"master", "dev", "feature/x"}, Tags: []string{"v1", "v2", "v3"}, Files: []string{"README.md", "go.mod"}})
	gh.AddRepo("acme/web", testenv.GitHubRepo{Branches: []string{"main"}, Files: []string{"package.json"}})
	gh.AddRepo("acme/ops", testenv.GitHubRepo{Branches: []string{"main"}, Files: []string{"Makefile"}})
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("acme", "Github", gh.URL, map[string]any{"username": "bot", "token": "tok-list"})), http.StatusCreated)

	names := func(path string) []string {
		t.Helper()
		r := env.Do("GET", "/api/v1/projects/acme/"+path, nil)
		wantStatus(t, r, http.StatusOK)
		var list struct {
			Metadata struct{ Total int }
			Items    []any
		}
		r.JSON(t, &list)
		var out []string
		for _, it := range list.Items {
			switch v := it.(type) {
			case string:
				out = append(out, v)
			case map[string]any:
				out = append(out, v["name"].(string))
				if u, _ := v["url"].(string); u == "" {
					t.Fatalf("repo without url: %v", v)
				}
			}
		}
		if list.Metadata.Total != len(out) {
			t.Fatalf("total %d for %d items", list.Metadata.Total, len(out))
		}
		sort.Strings(out)
		return out
	}
	// Every list has several pages on the fake (two items a page).
	if got := names("repos"); strings.Join(got, ",") != "acme/api,acme/ops,acme/web" {
		t.Fatalf("repos %v", got)
	}
	if got := names("branches?repo=acme/api"); strings.Join(got, ",") != "dev,feature/x,master" {
		t.Fatalf("branches %v", got)
	}
	if got := names("tags?repo=acme/api"); strings.Join(got, ",") != "v1,v2,v3" {
		t.Fatalf("tags %v", got)
	}
	for repo, want := range map[string]string{"acme/api": "Go", "acme/web": "NodeJS", "acme/ops": ""} {
		r := env.Do("GET", "/api/v1/projects/acme/templatetype?repo="+repo, nil)
		wantStatus(t, r, http.StatusOK)
		var tt struct{ Type string }
		r.JSON(t, &tt)
		if tt.Type != want {
			t.Fatalf("templatetype of %s = %q, want %q", repo, tt.Type, want)
		}
	}
	for _, path := range []string{"branches", "tags", "templatetype", "branches?repo="} {
		wantError(t, env.Do("GET", "/api/v1/projects/acme/"+path, nil), http.StatusBadRequest, api.ReasonInvalidField, "repo")
	}
	wantError(t, env.Do("GET", "/api/v1/projects/acme/branches?repo=acme/nope", nil), http.StatusNotFound, api.ReasonNotFound, "")
	wantError(t, env.Do("GET", "/api/v1/projects/nope/repos", nil), http.StatusNotFound, api.ReasonNotFound, "")
}

// scmFixture is a project whose code is on a fake GitHub that also serves git.
type scmFixture struct {
	*fixture
	gh *testenv.GitHub
}

const cloneToken = "tok-clone-s3cr3t"

func newSCMFixture(t *testing.T) *scmFixture {
	t.Helper()
	env := testenv.Start(t, testenv.Options{})
	gs := testenv.StartGitServer(t)
	gs.Repo("acme/app", map[string]string{"README.md": "hello\n"}, map[string]string{"data.txt": "from-the-repo\n"})
	gh := testenv.StartGitHub(t, cloneToken)
	gh.ServeGit(gs)
	gh.AddRepo("acme/app", testenv.GitHubRepo{Branches: []string{"master"}})
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("demo", "Github", gh.URL, map[string]any{"username": "bot", "token": cloneToken})), http.StatusCreated)
	f := &fixture{env: env, git: gs, repoURL: gh.URL + "/acme/app.git"}
	return &scmFixture{fixture: f, gh: gh}
}

func (f *fixture) stageLog(t *testing.T, id, stage string) string {
	t.Helper()
	r := f.env.Do("GET", f.basePath+"/records/"+id+"/logs?stage="+stage, nil)
	wantStatus(t, r, http.StatusOK)
	return string(r.Body)
}

func TestCheckoutWithProjectCredentialsAndTag(t *testing.T) {
	f := newSCMFixture(t)
	f.pipeline(t, "private", "ignored-by-local", map[string]any{
		"unitTest": map[string]any{"command": []string{"cat data.txt", "cat .git/config", "cat .git/FETCH_HEAD", "env | sort"}},
	})
	rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master", "createScmTag": true}).ID)
	if rec.Status != model.StatusSuccess {
		t.Fatalf("record %s: %s", rec.Status, rec.ErrorMessage)
	}
	head := f.git.Head("acme/app")
	if got := rec.StageStatus.CodeCheckout.Commits.MainRepo.ID; got != head {
		t.Fatalf("checked out %s, want %s", got, head)
	}
	for _, stage := range []string{"codeCheckout", "unitTest"} {
		log := f.stageLog(t, rec.ID, stage)
		// Masking would turn a leaked token into ********: neither may appear.
		for _, leak := range []string{"s3cr3t", "********", "extraheader", "Authorization", "Basic "} {
			if strings.Contains(log, leak) {
				t.Fatalf("%s log shows %q:\n%s", stage, leak, log)
			}
		}
		if stage == "unitTest" && !strings.Contains(log, "from-the-repo") {
			t.Fatalf("unit test did not see the checkout:\n%s", log)
		}
	}
	// createScmTag tagged the commit with the record's name through the API.
	if got := f.gh.CreatedTags(); len(got) != 1 || got[0] != "acme/app:"+rec.Name+"@"+head {
		t.Fatalf("created tags %v, want acme/app:%s@%s", got, rec.Name, head)
	}

	// A tag and a commit ID check out too: the older commit, by tag and by SHA.
	older := f.git.RevParse("acme/app", "master~1")
	f.git.Tag("acme/app", "v0.1", older)
	for _, ref := range []string{"refs/tags/v0.1", "v0.1", older} {
		rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": ref}).ID)
		if rec.Status != model.StatusFailed || rec.StageStatus.CodeCheckout.Status != model.StatusSuccess ||
			rec.StageStatus.CodeCheckout.Commits.MainRepo.ID != older {
			// The unit test fails (data.txt is not in the older commit); the checkout must not.
			t.Fatalf("ref %s: record %s %q, checkout %+v", ref, rec.Status, rec.ErrorMessage, rec.StageStatus.CodeCheckout)
		}
	}

	// Refs that cannot be fetched fail the stage with a clear message, fast.
	start := time.Now()
	rec = f.waitTerminal(t, f.start(t, map[string]any{"ref": "no-such-branch"}).ID)
	if rec.Status != model.StatusFailed || !strings.Contains(rec.ErrorMessage, `ref "no-such-branch"`) || time.Since(start) > time.Minute {
		t.Fatalf("missing ref: %s %q after %s", rec.Status, rec.ErrorMessage, time.Since(start))
	}
}

func TestCheckoutWithoutCredentialsFails(t *testing.T) {
	f := newSCMFixture(t)
	// The same private repository, reached from a project without credentials.
	wantStatus(t, f.env.Do("POST", "/api/v1/projects", scmProject("anon", "Github", f.gh.URL, nil)), http.StatusCreated)
	body := map[string]any{"name": "p", "build": map[string]any{
		"builderImage": map[string]any{"image": "x"},
		"stages": map[string]any{"codeCheckout": map[string]any{"codeSources": []any{map[string]any{
			"type": "Github", "main": true, "gitHub": map[string]any{"url": f.repoURL},
		}}}},
	}}
	wantStatus(t, f.env.Do("POST", "/api/v1/projects/anon/pipelines", body), http.StatusCreated)
	f.basePath = "/api/v1/projects/anon/pipelines/p"
	rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
	if rec.Status != model.StatusFailed || !strings.Contains(rec.ErrorMessage, "no credentials") {
		t.Fatalf("checkout without credentials: %s %q", rec.Status, rec.ErrorMessage)
	}
}

func TestCheckoutOtherSourceWithPassword(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	gs := testenv.StartPrivateGitServer(t, "carol", "pw-s3cr3t")
	url := gs.Repo("lib", map[string]string{"lib.txt": "library\n"})
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	f := &fixture{env: env, git: gs}
	for _, tc := range []struct {
		name, password, want string
	}{{"withpassword", "pw-s3cr3t", model.StatusSuccess}, {"wrongpassword", "nope", model.StatusFailed}} {
		body := map[string]any{"name": tc.name, "build": map[string]any{
			"builderImage": map[string]any{"image": "x"},
			"stages": map[string]any{
				"codeCheckout": map[string]any{"codeSources": []any{map[string]any{
					"type": "Other", "main": true, "otherCodeSource": map[string]any{"url": url, "username": "carol", "password": tc.password},
				}}},
				"unitTest": map[string]any{"command": []string{"cat lib.txt", "cat .git/config"}},
			},
		}}
		wantStatus(t, env.Do("POST", "/api/v1/projects/demo/pipelines", body), http.StatusCreated)
		f.basePath = "/api/v1/projects/demo/pipelines/" + tc.name
		rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
		if rec.Status != tc.want {
			t.Fatalf("%s: record %s %q", tc.name, rec.Status, rec.ErrorMessage)
		}
		if rec.Status == model.StatusSuccess {
			if log := f.stageLog(t, rec.ID, "unitTest"); !strings.Contains(log, "library") || strings.Contains(log, "********") {
				t.Fatalf("unit test log:\n%s", log)
			}
		}
	}
}

func TestCommitStatusForSCMTriggeredRecord(t *testing.T) {
	f := newSCMFixture(t)
	f.pipeline(t, "statuses", "ignored-by-local", map[string]any{"unitTest": map[string]any{"command": []string{"true"}}})
	ctx := context.Background()
	proj, err := f.env.Store.GetProject(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := f.env.Store.GetPipeline(ctx, proj.ID, "statuses")
	if err != nil {
		t.Fatal(err)
	}
	// A record as a webhook starts it.
	rec := &model.Record{ID: "scm-status-1", ProjectID: proj.ID, PipelineID: pl.ID, Trigger: model.TriggerSCM,
		PerformParams: &model.PerformParams{Ref: "master"}, StageStatus: &model.StageStatus{}, Status: model.StatusPending,
		StartTime: time.Now().UTC(), WorkflowID: "scm-status-1"}
	if err := f.env.Store.CreateRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	s := starter.New(f.env.Temporal)
	s.TaskQueue = testenv.TaskQueue
	if _, err := s.Start(ctx, rec, proj, pl); err != nil {
		t.Fatal(err)
	}
	done := f.waitTerminal(t, rec.ID)
	if done.Status != model.StatusSuccess {
		t.Fatalf("record %s %q", done.Status, done.ErrorMessage)
	}
	waitUntil(t, "the final commit status", func() bool { return len(f.gh.Statuses()) == 2 })
	head := f.git.Head("acme/app")
	st := f.gh.Statuses()
	if st[0].State != "pending" || st[1].State != "success" {
		t.Fatalf("statuses %+v, want pending then success", st)
	}
	for _, s := range st {
		if s.SHA != head || s.Repo != "acme/app" || s.Context != "cyclone/statuses" || !strings.HasSuffix(s.TargetURL, "/records/"+rec.ID) {
			t.Fatalf("status %+v", s)
		}
	}
}

func TestSVNCheckoutAndTag(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	svn := testenv.StartSVNServer(t, "alice", "svn-s3cr3t")
	rev := svn.Commit("add the build", map[string]string{"trunk/pom.xml": "<project/>\n"})
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("svnp", "SVN", svn.URL, map[string]any{"username": "alice", "password": "svn-s3cr3t"})), http.StatusCreated)
	body := map[string]any{"name": "svn", "build": map[string]any{
		"builderImage": map[string]any{"image": "x"},
		"stages": map[string]any{
			"codeCheckout": map[string]any{"codeSources": []any{map[string]any{
				"type": "SVN", "main": true, "otherCodeSource": map[string]any{"url": svn.URL},
			}}},
			"unitTest": map[string]any{"command": []string{"cat pom.xml", "ls -a"}},
		},
	}}
	wantStatus(t, env.Do("POST", "/api/v1/projects/svnp/pipelines", body), http.StatusCreated)
	f := &fixture{env: env, basePath: "/api/v1/projects/svnp/pipelines/svn"}
	rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "trunk", "createScmTag": true}).ID)
	if rec.Status != model.StatusSuccess {
		t.Fatalf("record %s %q", rec.Status, rec.ErrorMessage)
	}
	if got := rec.StageStatus.CodeCheckout.Commits.MainRepo.ID; got != rev || !strings.HasPrefix(rec.Name, rev+"-") {
		t.Fatalf("checked out revision %s (record %s), want %s", got, rec.Name, rev)
	}
	if log := f.stageLog(t, rec.ID, "unitTest"); !strings.Contains(log, "<project/>") || strings.Contains(log, "********") {
		t.Fatalf("unit test log:\n%s", log)
	}
	if !svn.Exists("tags/" + rec.Name) {
		t.Fatalf("tags/%s was not created", rec.Name)
	}
	// A revision that does not exist fails the stage with a clear message.
	rec = f.waitTerminal(t, f.start(t, map[string]any{"ref": "trunk@999"}).ID)
	if rec.Status != model.StatusFailed || !strings.Contains(rec.ErrorMessage, "svn checkout") || strings.Contains(rec.ErrorMessage, "svn-s3cr3t") {
		t.Fatalf("missing revision: %s %q", rec.Status, rec.ErrorMessage)
	}
}

// createScmTag copies exactly the directory a record checked out (the source's URL,
// its path and the ref's path) at the checked-out revision into the tags/ directory
// of its trunk/branches/tags layout; a checkout in no such layout fails the tag,
// saying why.
func TestSVNTagCopiesCheckedOutTree(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	svn := testenv.StartSVNServer(t, "alice", "svn-s3cr3t")
	svn.Commit("projects", map[string]string{
		"trunk/root.txt":              "root trunk\n",
		"branches/rb/rb.txt":          "root branch\n",
		"app/trunk/app.txt":           "app trunk\n",
		"app/branches/b1/b1.txt":      "app branch\n",
		"app/tags/.keep":              "",
		"app/trunk/nested/trunk.note": "not a layout of its own\n",
	})
	// A later revision: a tag at the checked-out revision does not hold it.
	checkedOut := svn.Commit("more", map[string]string{"app/trunk/later.txt": "x\n"})
	svn.Commit("after the checkouts", map[string]string{"app/trunk/after.txt": "x\n", "app/branches/b1/after.txt": "x\n"})
	wantStatus(t, env.Do("POST", "/api/v1/projects", scmProject("svnt", "SVN", svn.URL, map[string]any{"username": "alice", "password": "svn-s3cr3t"})), http.StatusCreated)

	pipeline := func(name string, source map[string]any) *fixture {
		t.Helper()
		body := map[string]any{"name": name, "build": map[string]any{
			"builderImage": map[string]any{"image": "x"},
			"stages": map[string]any{
				"codeCheckout": map[string]any{"codeSources": []any{map[string]any{"type": "SVN", "main": true, "otherCodeSource": source}}},
				"unitTest":     map[string]any{"command": []string{"ls"}},
			},
		}}
		wantStatus(t, env.Do("POST", "/api/v1/projects/svnt/pipelines", body), http.StatusCreated)
		return &fixture{env: env, basePath: "/api/v1/projects/svnt/pipelines/" + name}
	}
	root := pipeline("root", map[string]any{"url": svn.URL})
	appTrunk := pipeline("app-trunk", map[string]any{"url": svn.URL + "/app/trunk"})
	appPath := pipeline("app-path", map[string]any{"url": svn.URL, "path": "app"})

	for i, tc := range []struct {
		name       string
		f          *fixture
		ref        string
		tags       string   // the tags directory the tag goes to
		has, lacks []string // files of the tag
	}{
		{"root URL, branch ref", root, "branches/rb", "tags", []string{"rb.txt"}, []string{"root.txt", "app"}},
		{"trunk URL, revision ref", appTrunk, checkedOut, "app/tags", []string{"app.txt", "later.txt", "nested/trunk.note"}, []string{"after.txt", "trunk", "app"}},
		{"path, branch ref at a revision", appPath, "branches/b1@" + checkedOut, "app/tags", []string{"b1.txt"}, []string{"after.txt", "app.txt"}},
	} {
		// Named records: two records of one revision started within a second would
		// otherwise share their default name, and so their tag.
		rec := tc.f.waitTerminal(t, tc.f.start(t, map[string]any{"ref": tc.ref, "createScmTag": true, "name": "rel-" + string(rune('a'+i))}).ID)
		if rec.Status != model.StatusSuccess {
			t.Fatalf("%s: record %s %q", tc.name, rec.Status, rec.ErrorMessage)
		}
		tag := tc.tags + "/" + rec.Name
		if !svn.Exists(tag) {
			t.Fatalf("%s: %s was not created", tc.name, tag)
		}
		for _, f := range tc.has {
			if !svn.Exists(tag + "/" + f) {
				t.Errorf("%s: %s lacks %s", tc.name, tag, f)
			}
		}
		for _, f := range tc.lacks {
			if svn.Exists(tag + "/" + f) {
				t.Errorf("%s: %s holds %s", tc.name, tag, f)
			}
		}
	}

	// The repository root itself is in no trunk/branches/tags layout: the record
	// checks it out, then fails on the tag.
	rec := root.waitTerminal(t, root.start(t, map[string]any{"ref": checkedOut, "createScmTag": true}).ID)
	if rec.Status != model.StatusFailed || !strings.Contains(rec.ErrorMessage, "createScmTag") ||
		!strings.Contains(rec.ErrorMessage, "cannot tag the server root") || strings.Contains(rec.ErrorMessage, "svn-s3cr3t") {
		t.Fatalf("tag of the repository root: %s %q", rec.Status, rec.ErrorMessage)
	}
	if svn.Exists("tags/" + rec.Name) {
		t.Fatalf("tags/%s was created from the repository root", rec.Name)
	}
}

// git dials by itself: a source on a link-local or metadata address fails the
// checkout before git runs.
func TestCheckoutRefusesMetadataAddress(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	wantStatus(t, env.Do("POST", "/api/v1/projects", projectBody("demo")), http.StatusCreated)
	f := &fixture{env: env, repoURL: "http://169.254.169.254/latest/meta-data.git"}
	f.pipeline(t, "meta", "x", map[string]any{})
	rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
	if rec.Status != model.StatusFailed || !strings.Contains(rec.ErrorMessage, "may not be checked out") {
		t.Fatalf("checkout of a metadata address: %s %q", rec.Status, rec.ErrorMessage)
	}
	if log := f.stageLog(t, rec.ID, "codeCheckout"); strings.Contains(log, "+ git") {
		t.Fatalf("git ran:\n%s", log)
	}
}
