package store_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/devstack"
	"github.com/cycloneci/cyclone/internal/logs"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/secrets"
	"github.com/cycloneci/cyclone/internal/store"
	"github.com/cycloneci/cyclone/internal/testenv"
)

// newBox returns the test's own key: reopening the store in the same test opens its
// secrets.
func newBox(t *testing.T) *secrets.Box {
	t.Helper()
	key := sha256.Sum256([]byte(t.Name()))
	box, err := secrets.New(key[:])
	if err != nil {
		t.Fatal(err)
	}
	return box
}

func randomBox(t *testing.T) *secrets.Box {
	t.Helper()
	key := make([]byte, secrets.KeySize)
	_, _ = rand.Read(key)
	box, err := secrets.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return box
}

// startStore opens a store on a fresh embedded FerretDB (real wire protocol).
func startStore(t *testing.T) (*store.Store, string) {
	t.Helper()
	ctx := context.Background()
	m, err := devstack.StartMongo(ctx, devstack.MongoOptions{DataDir: t.TempDir(), Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	st, err := store.Open(ctx, m.URI(), "cyclone", newBox(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close(ctx) })
	return st, m.URI()
}

func rawDoc(t *testing.T, uri, coll, id string) bson.M {
	t.Helper()
	c, err := mongo.Connect(context.Background(), options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(context.Background())
	var doc bson.M
	if err := c.Database("cyclone").Collection(coll).FindOne(context.Background(), bson.M{"_id": id}).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func project(name string) *model.Project {
	return &model.Project{Name: name, SCM: &model.SCMConfig{Type: model.SCMGitlab, Server: "https://gitlab.example.com", Token: "glpat-very-secret"},
		Registry: &model.Registry{Server: "r.example.com", Repository: "team", Username: "u", Password: "registry-pass"}}
}

func TestSecretsAreSealedAtRest(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	p := project("sealed")
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	doc := rawDoc(t, uri, "projects", p.ID)
	raw := strings.ToLower(bsonString(t, doc))
	for _, secret := range []string{"glpat-very-secret", "registry-pass"} {
		if strings.Contains(raw, secret) {
			t.Fatalf("secret %q stored in plaintext: %v", secret, doc)
		}
	}
	creds, err := st.ProjectCredentials(ctx, p.ID)
	if err != nil || creds.SCMToken != "glpat-very-secret" || creds.RegistryPassword != "registry-pass" {
		t.Fatalf("credentials %+v, %v", creds, err)
	}

	// The same database opened with another key is refused at once.
	if other, err := store.Open(ctx, uri, "cyclone", randomBox(t)); !errors.Is(err, store.ErrWrongKey) {
		if other != nil {
			other.Close(ctx)
		}
		t.Fatalf("wrong key: got %v, want store.ErrWrongKey", err)
	}
}

func bsonString(t *testing.T, doc bson.M) string {
	t.Helper()
	data, err := bson.MarshalExtJSON(doc, false, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestUniqueNames(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	if err := st.CreateProject(ctx, project("one")); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateProject(ctx, project("one")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate project: %v", err)
	}
	two := project("two")
	if err := st.CreateProject(ctx, two); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateProject(ctx, "two", project("one")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("rename onto a taken name: %v", err)
	}

	pipeline := func(projectID, name string) *model.Pipeline {
		return &model.Pipeline{Name: name, ProjectID: projectID, Build: &model.Build{BuilderImage: &model.BuilderImage{Image: "x"}}}
	}
	if err := st.CreatePipeline(ctx, pipeline(two.ID, "build")); err != nil {
		t.Fatal(err)
	}
	if err := st.CreatePipeline(ctx, pipeline(two.ID, "build")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate pipeline in a project: %v", err)
	}
	if err := st.CreatePipeline(ctx, pipeline("another-project", "build")); err != nil {
		t.Fatalf("same pipeline name in another project: %v", err)
	}
}

func TestRecordProjection(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	start := time.Now().UTC().Add(-time.Minute)
	for i, id := range []string{"r1", "r2", "r3"} {
		r := &model.Record{ID: id, PipelineID: "p", ProjectID: "proj", Status: model.StatusPending,
			StageStatus: &model.StageStatus{}, StartTime: start.Add(time.Duration(i) * time.Second)}
		if err := st.CreateRecord(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	recs, total, err := st.ListRecords(ctx, "p", store.ListOptions{Limit: 2})
	if err != nil || total != 3 || len(recs) != 2 || recs[0].ID != "r3" || recs[1].ID != "r2" {
		t.Fatalf("newest first: %v %d %v", ids(recs), total, err)
	}

	if err := st.SetRecordRunning(ctx, "r1", "run-1", "abc1234-1"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	upd := model.StageUpdate{Stage: model.StageCodeCheckout, Status: model.StatusSuccess, StartTime: &t0, EndTime: &t0,
		Commit: &model.Commit{ID: "abc", Author: "a", Message: "m"}}
	for range 2 { // applying the same update twice is harmless
		if err := st.UpdateStage(ctx, "r1", upd); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.UpdateStage(ctx, "r1", model.StageUpdate{Stage: model.StageUnitTest, Status: model.StatusRunning, StartTime: &t0}); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishRecord(ctx, "r1", model.StatusAborted, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	r, err := st.GetRecord(ctx, "p", "r1")
	if err != nil {
		t.Fatal(err)
	}
	ss := r.StageStatus
	if r.Status != model.StatusAborted || r.RunID != "run-1" || r.Name != "abc1234-1" || r.EndTime == nil ||
		ss.CodeCheckout.Status != model.StatusSuccess || ss.CodeCheckout.Commits.MainRepo.ID != "abc" ||
		ss.UnitTest.Status != model.StatusAborted || ss.UnitTest.EndTime == nil {
		t.Fatalf("record after abort: %+v / %+v / %+v", r, ss.CodeCheckout, ss.UnitTest)
	}
	// A terminal record never moves back to Running.
	if err := st.SetRecordRunning(ctx, "r1", "", ""); err != nil {
		t.Fatal(err)
	}
	if r, _ := st.GetRecord(ctx, "p", "r1"); r.Status != model.StatusAborted {
		t.Fatalf("terminal record moved to %s", r.Status)
	}

	unfinished, err := st.ListUnfinishedRecords(ctx, time.Time{}, "", time.Now(), 100)
	if err != nil || len(unfinished) != 2 {
		t.Fatalf("unfinished: %v %v", ids(unfinished), err)
	}
}

func ids(recs []*model.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}

func TestPipelineSecretsAreSealedAtRest(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	p := &model.Pipeline{Name: "p", ProjectID: "proj", Build: &model.Build{
		BuilderImage: &model.BuilderImage{Image: "x", EnvVars: []model.EnvVar{
			{Name: "PLAIN", Value: "plain-value"}, {Name: "TOKEN", Value: "env-secret-value", Secret: true},
		}},
		Stages: &model.Stages{CodeCheckout: &model.CodeCheckoutStage{CodeSources: []model.CodeSource{
			{Type: "Other", Main: true, OtherCodeSource: &model.OtherCodeSource{URL: "https://git.example.com/a.git", Username: "u", Password: "source-secret-value"}},
		}}},
	}}
	if err := st.CreatePipeline(ctx, p); err != nil {
		t.Fatal(err)
	}
	raw := bsonString(t, rawDoc(t, uri, "pipelines", p.ID))
	if strings.Contains(raw, "env-secret-value") || strings.Contains(raw, "source-secret-value") || !strings.Contains(raw, "plain-value") {
		t.Fatalf("pipeline document: %s", raw)
	}
	secrets, err := st.PipelineSecrets(ctx, p.ID)
	if err != nil || secrets.Env["builderImage.envVars[TOKEN]"] != "env-secret-value" || secrets.CodeSourcePasswords[0] != "source-secret-value" {
		t.Fatalf("pipeline secrets %+v, %v", secrets, err)
	}

	// An update that leaves the values empty keeps them; one that moves the code
	// source to another URL drops its password.
	upd := &model.Pipeline{Name: "p", Build: &model.Build{
		BuilderImage: &model.BuilderImage{Image: "x", EnvVars: []model.EnvVar{{Name: "TOKEN", Secret: true}}},
		Stages: &model.Stages{CodeCheckout: &model.CodeCheckoutStage{CodeSources: []model.CodeSource{
			{Type: "Other", Main: true, OtherCodeSource: &model.OtherCodeSource{URL: "https://elsewhere.example.com/a.git"}},
		}}},
	}}
	if err := st.UpdatePipeline(ctx, "proj", "p", upd); err != nil {
		t.Fatal(err)
	}
	secrets, err = st.PipelineSecrets(ctx, p.ID)
	if err != nil || secrets.Env["builderImage.envVars[TOKEN]"] != "env-secret-value" || len(secrets.CodeSourcePasswords) != 0 {
		t.Fatalf("after update %+v, %v", secrets, err)
	}
}

func TestKeptSecretsStayWithTheirServer(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	p := project("moving")
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	same := project("moving")
	same.SCM.Token, same.Registry.Password = "", ""
	if err := st.UpdateProject(ctx, "moving", same); err != nil {
		t.Fatal(err)
	}
	if c, _ := st.ProjectCredentials(ctx, p.ID); c.SCMToken != "glpat-very-secret" || c.RegistryPassword != "registry-pass" {
		t.Fatalf("secrets lost on an update to the same servers: %+v", c)
	}
	moved := project("moving")
	moved.SCM.Token, moved.Registry.Password = "", ""
	moved.SCM.Server, moved.Registry.Server = "https://evil.example.com", "evil.example.com"
	if err := st.UpdateProject(ctx, "moving", moved); err != nil {
		t.Fatal(err)
	}
	if c, _ := st.ProjectCredentials(ctx, p.ID); c.SCMToken != "" || c.RegistryPassword != "" {
		t.Fatalf("secrets followed the project to another server: %+v", c)
	}
}

func TestRotateRecords(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	start := time.Now().UTC().Add(-time.Hour)
	statuses := []string{model.StatusSuccess, model.StatusRunning, model.StatusFailed, model.StatusAborted, model.StatusSuccess, model.StatusSuccess}
	for _, name := range []string{"a", "b"} {
		p := &model.Pipeline{Name: name, ProjectID: "proj", Build: &model.Build{}}
		if err := st.CreatePipeline(ctx, p); err != nil {
			t.Fatal(err)
		}
		for i, status := range statuses { // r0 oldest ... r5 newest
			r := &model.Record{ID: fmt.Sprintf("%s-r%d", name, i), PipelineID: p.ID, ProjectID: "proj", Status: status,
				StageStatus: &model.StageStatus{}, StartTime: start.Add(time.Duration(i) * time.Minute)}
			if err := st.CreateRecord(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := st.RotateRecords(ctx, 2)
	if err != nil || n != 6 {
		t.Fatalf("rotated %d records (%v), want 3 per pipeline", n, err)
	}
	for _, name := range []string{"a", "b"} {
		for i, want := range []bool{false, true, false, false, true, true} { // the running r1 stays
			_, err := st.GetRecordByID(ctx, fmt.Sprintf("%s-r%d", name, i))
			if got := err == nil; got != want {
				t.Errorf("%s-r%d kept = %v, want %v", name, i, got, want)
			}
		}
	}
}

func TestDeleteOrphanLogs(t *testing.T) {
	st, _ := startStore(t)
	ctx := context.Background()
	for _, id := range []string{"kept", "deleted"} {
		if err := st.CreateRecord(ctx, &model.Record{ID: id, PipelineID: "p", Status: model.StatusSuccess, StageStatus: &model.StageStatus{}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteRecord(ctx, "deleted"); err != nil {
		t.Fatal(err)
	}
	// A stage that was still writing stores its lines after the deletion.
	for _, id := range []string{"kept", "deleted"} {
		h := &logs.Head{Stream: logs.Stream{RecordID: id, PipelineID: "p", Stage: model.StageUnitTest}, Tail: []string{"line"}, Lines: 1, Attempt: 1}
		if err := st.PutLogHead(ctx, h, 0); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.DeleteOrphanLogs(ctx, 0)
	if err != nil || n != 1 {
		t.Fatalf("deleted the logs of %d records (%v), want 1", n, err)
	}
	for id, want := range map[string]bool{"kept": true, "deleted": false} {
		h, err := st.GetLogHead(ctx, logs.Stream{RecordID: id, Stage: model.StageUnitTest})
		if err != nil || (h != nil) != want {
			t.Errorf("log of %s: head %v, %v; want present=%v", id, h, err, want)
		}
	}
}

// On FerretDB a project is found by name through a hint read by _id; a missing or
// stale hint (renames, deletions, names reused) never gives a wrong answer and is
// put right by the lookup that notices it.
func TestProjectNameHints(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	hints := c.Database("cyclone").Collection("projectNames")
	hintOf := func(name string) string {
		t.Helper()
		var h struct {
			ProjectID string `bson:"projectID"`
		}
		err := hints.FindOne(ctx, bson.M{"_id": name}).Decode(&h)
		if errors.Is(err, mongo.ErrNoDocuments) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return h.ProjectID
	}
	get := func(name, wantID string) {
		t.Helper()
		p, err := st.GetProject(ctx, name)
		if wantID == "" {
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("project %q: %+v, %v; want none", name, p, err)
			}
			return
		}
		if err != nil || p.ID != wantID || p.Name != name {
			t.Fatalf("project %q: %+v, %v; want ID %s", name, p, err, wantID)
		}
	}

	alpha := project("alpha")
	if err := st.CreateProject(ctx, alpha); err != nil {
		t.Fatal(err)
	}
	if hintOf("alpha") != alpha.ID {
		t.Fatal("no hint written for a new project")
	}
	get("alpha", alpha.ID)

	// Renamed: the old name is nobody's, the new one is the project's.
	renamed := project("beta")
	if err := st.UpdateProject(ctx, "alpha", renamed); err != nil {
		t.Fatal(err)
	}
	get("alpha", "")
	get("beta", alpha.ID)
	if hintOf("alpha") != "" || hintOf("beta") != alpha.ID {
		t.Fatalf("hints after a rename: alpha %q, beta %q", hintOf("alpha"), hintOf("beta"))
	}

	// The old name reused by another project.
	again := project("alpha")
	if err := st.CreateProject(ctx, again); err != nil {
		t.Fatal(err)
	}
	get("alpha", again.ID)

	// A wrong hint and a missing one: the right project all the same, and the
	// hint put right.
	if _, err := hints.UpdateOne(ctx, bson.M{"_id": "beta"}, bson.M{"$set": bson.M{"projectID": again.ID}}); err != nil {
		t.Fatal(err)
	}
	get("beta", alpha.ID)
	if hintOf("beta") != alpha.ID {
		t.Fatal("a wrong hint was not put right")
	}
	if _, err := hints.DeleteOne(ctx, bson.M{"_id": "alpha"}); err != nil {
		t.Fatal(err)
	}
	get("alpha", again.ID)
	if hintOf("alpha") != again.ID {
		t.Fatal("a missing hint was not written again")
	}

	// Deleted: gone, with its hint.
	if err := st.DeleteProject(ctx, alpha.ID); err != nil {
		t.Fatal(err)
	}
	get("beta", "")
	if hintOf("beta") != "" {
		t.Fatal("the hint of a deleted project is left")
	}
	if err := st.DeleteProject(ctx, alpha.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting a deleted project: %v", err)
	}
}
