package store_test

import (
	"context"
	"maps"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

// TestProjectQuotaWithDottedKeys: a project's worker quota uses the spec's keys
// ("limits.cpu"), which the embedded store refuses as field names; it is stored as
// name/value pairs and read back as the same map, and a quota stored as a document
// (by a MongoDB that took dotted names) still reads.
func TestProjectQuotaWithDottedKeys(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	quota := model.Quota{"requests.cpu": "0.5", "requests.memory": "1G", "limits.cpu": "1", "limits.memory": "2G"}
	p := &model.Project{Name: "sized", SCM: &model.SCMConfig{Type: model.SCMGithub, Server: "https://github.com"},
		Worker: &model.WorkerConfig{Quota: quota}}
	if err := st.CreateProject(ctx, p); err != nil {
		t.Fatalf("create a project with a quota: %v", err)
	}
	got, err := st.GetProject(ctx, "sized")
	if err != nil {
		t.Fatal(err)
	}
	if got.Worker == nil || !maps.Equal(got.Worker.Quota, quota) {
		t.Fatalf("quota read back %v, want %v", got.Worker, quota)
	}

	c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	projects := c.Database("cyclone").Collection("projects")
	var raw struct {
		Worker struct {
			Quota []bson.M `bson:"quota"`
		} `bson:"worker"`
	}
	if err := projects.FindOne(ctx, bson.D{{Key: "_id", Value: p.ID}}).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Worker.Quota) != 4 || raw.Worker.Quota[0]["name"] != "limits.cpu" || raw.Worker.Quota[0]["value"] != "1" {
		t.Fatalf("stored quota %v, want sorted name/value pairs", raw.Worker.Quota)
	}

	// A quota kept as a document (field names without dots here: the embedded store
	// takes no others) reads as well.
	if _, err := projects.UpdateOne(ctx, bson.D{{Key: "_id", Value: p.ID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "worker.quota", Value: bson.D{{Key: "cpu", Value: "3"}}}}}}); err != nil {
		t.Fatal(err)
	}
	if got, err = st.GetProject(ctx, "sized"); err != nil || got.Worker.Quota["cpu"] != "3" {
		t.Fatalf("quota stored as a document: %v, %v", got, err)
	}
}
