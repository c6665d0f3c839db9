package api_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/api"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/internal/testimage"
)

const (
	kubeToken    = "kube-bearer-t0ken-s3cr3t"
	kubePassword = "kube-passw0rd-s3cr3t"
	// caPEM is a syntactically PEM block; nothing parses it as a certificate here.
	caPEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUca-s3cr3t\n-----END CERTIFICATE-----\n"
)

func kubeCloud(name string) map[string]any {
	return map[string]any{"name": name, "type": "kubernetes", "kubernetes": map[string]any{
		"host": "10.0.0.1:6443", "namespace": "cyclone-worker", "bearerToken": kubeToken,
		"tlsClientConfig": map[string]any{"caData": caPEM},
	}}
}

func dockerCloud(name, host string) map[string]any {
	return map[string]any{"name": name, "type": "Docker", "docker": map[string]any{"host": host}}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestCloudsCRUD(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	secretsAbsent := func(t *testing.T, body []byte) {
		t.Helper()
		for _, s := range []string{kubeToken, kubePassword, "ca-s3cr3t"} {
			if bytes.Contains(body, []byte(s)) {
				t.Fatalf("a secret came back: %s", body)
			}
		}
	}

	r := env.Do("POST", "/api/v1/clouds", kubeCloud("k8s"))
	wantStatus(t, r, http.StatusCreated)
	secretsAbsent(t, r.Body)
	var k model.Cloud
	r.JSON(t, &k)
	if k.ID == "" || k.Type != model.CloudKubernetes || k.Kubernetes.Host != "https://10.0.0.1:6443" ||
		!k.Kubernetes.BearerTokenSet || k.Kubernetes.PasswordSet || !k.Kubernetes.TLSClientConfig.CADataSet || k.CreationTime.IsZero() {
		t.Fatalf("created cloud %s", r.Body)
	}
	wantStatus(t, env.Do("POST", "/api/v1/clouds", dockerCloud("local", "unix:///var/run/docker.sock")), http.StatusCreated)

	// Sealed at rest: the stored document holds no plaintext secret.
	client, err := mongo.Connect(context.Background(), options.Client().ApplyURI(env.MongoURI))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Disconnect(context.Background())
	raw, err := client.Database("cyclone").Collection("clouds").FindOne(context.Background(), bson.D{{Key: "name", Value: "k8s"}}).Raw()
	if err != nil {
		t.Fatal(err)
	}
	secretsAbsent(t, raw)
	if len(raw.Lookup("kubernetes", "bearerToken").Value) == 0 {
		t.Fatalf("no sealed token stored: %s", raw)
	}

	r = env.Do("GET", "/api/v1/clouds", nil)
	wantStatus(t, r, http.StatusOK)
	secretsAbsent(t, r.Body)
	var list struct {
		Metadata struct{ Total int } `json:"metadata"`
		Items    []model.Cloud       `json:"items"`
	}
	r.JSON(t, &list)
	if list.Metadata.Total != 2 || len(list.Items) != 2 || list.Items[0].Name != "k8s" || list.Items[1].Name != "local" {
		t.Fatalf("list %s", r.Body)
	}
	r = env.Do("GET", "/api/v1/clouds/k8s", nil)
	wantStatus(t, r, http.StatusOK)
	secretsAbsent(t, r.Body)

	// An update that leaves the secrets out keeps them; limits are the cloud's own.
	upd := kubeCloud("k8s")
	kube := upd["kubernetes"].(map[string]any)
	delete(kube, "bearerToken")
	delete(kube, "tlsClientConfig")
	upd["maxRunningRecords"] = 3
	r = env.Do("PUT", "/api/v1/clouds/k8s", upd)
	wantStatus(t, r, http.StatusOK)
	r.JSON(t, &k)
	if !k.Kubernetes.BearerTokenSet || !k.Kubernetes.TLSClientConfig.CADataSet || k.MaxRunningRecords != 3 {
		t.Fatalf("updated cloud %s", r.Body)
	}
	stored, err := env.Store.GetCloud(context.Background(), "k8s")
	if err != nil {
		t.Fatal(err)
	}
	sec, err := env.Store.CloudSecrets(stored)
	if err != nil || sec.BearerToken != kubeToken || string(sec.CAData) != strings.TrimSpace(caPEM) {
		t.Fatalf("secrets after update: %+v %v", sec, err)
	}
	// Switching to a password replaces the token.
	kube["username"], kube["password"] = "admin", kubePassword
	r = env.Do("PUT", "/api/v1/clouds/k8s", upd)
	wantStatus(t, r, http.StatusOK)
	secretsAbsent(t, r.Body)
	r.JSON(t, &k)
	if k.Kubernetes.BearerTokenSet || !k.Kubernetes.PasswordSet {
		t.Fatalf("cloud after switching to a password %s", r.Body)
	}

	bad := []struct {
		name  string
		body  any
		field string
	}{
		{"bad name", dockerCloud("Bad Name", "unix:///var/run/docker.sock"), "name"},
		{"bad type", map[string]any{"name": "x", "type": "Mesos"}, "type"},
		{"docker without host", map[string]any{"name": "x", "type": "Docker", "docker": map[string]any{}}, "docker.host"},
		{"docker without section", map[string]any{"name": "x", "type": "Docker"}, "docker"},
		{"docker host scheme", dockerCloud("x", "ftp://10.0.0.5:2375"), "docker.host"},
		{"docker host without port", dockerCloud("x", "tcp://10.0.0.5"), "docker.host"},
		{"docker metadata address", dockerCloud("x", "tcp://169.254.169.254:2375"), "docker.host"},
		{"kube without namespace", map[string]any{"name": "x", "type": "Kubernetes", "kubernetes": map[string]any{"host": "10.0.0.1"}}, "kubernetes.namespace"},
		{"kube without host", map[string]any{"name": "x", "type": "Kubernetes", "kubernetes": map[string]any{"namespace": "ns"}}, "kubernetes.host"},
		{"kube link-local host", map[string]any{"name": "x", "type": "Kubernetes", "kubernetes": map[string]any{"host": "https://[fe80::1]:6443", "namespace": "ns"}}, "kubernetes.host"},
		{"kube two auths", map[string]any{"name": "x", "type": "Kubernetes", "kubernetes": map[string]any{"host": "10.0.0.1", "namespace": "ns", "bearerToken": "a", "username": "u", "password": "p"}}, "kubernetes.bearerToken"},
		{"kube bad caData", map[string]any{"name": "x", "type": "Kubernetes", "kubernetes": map[string]any{"host": "10.0.0.1", "namespace": "ns", "tlsClientConfig": map[string]any{"caData": "not pem"}}}, "kubernetes.tlsClientConfig.caData"},
		{"negative limit", map[string]any{"name": "x", "type": "Docker", "docker": map[string]any{"host": "unix:///var/run/docker.sock"}, "maxRunningRecords": -1}, "maxRunningRecords"},
		{"limit not a number", map[string]any{"name": "x", "type": "Docker", "docker": map[string]any{"host": "unix:///var/run/docker.sock"}, "maxRunningRecords": "many"}, "maxRunningRecords"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, env.Do("POST", "/api/v1/clouds", tc.body), http.StatusBadRequest, api.ReasonInvalidField, tc.field)
			wantError(t, env.Do("PUT", "/api/v1/clouds/local", tc.body), http.StatusBadRequest, api.ReasonInvalidField, tc.field)
		})
	}
	wantError(t, env.Do("POST", "/api/v1/clouds", map[string]any{"type": "Docker", "docker": map[string]any{"host": "unix:///var/run/docker.sock"}}),
		http.StatusBadRequest, api.ReasonInvalidField, "name")
	// Nothing changed.
	r = env.Do("GET", "/api/v1/clouds/local", nil)
	wantStatus(t, r, http.StatusOK)
	var local model.Cloud
	r.JSON(t, &local)
	if local.Type != model.CloudDocker || local.Docker.Host != "unix:///var/run/docker.sock" || local.MaxRunningRecords != 0 {
		t.Fatalf("cloud changed by bad input: %s", r.Body)
	}
	r = env.Do("GET", "/api/v1/clouds", nil)
	r.JSON(t, &list)
	if list.Metadata.Total != 2 {
		t.Fatalf("bad input created a cloud: %s", r.Body)
	}

	wantError(t, env.Do("POST", "/api/v1/clouds", dockerCloud("local", "unix:///run/other.sock")), http.StatusConflict, api.ReasonAlreadyExists, "")
	wantError(t, env.Do("PUT", "/api/v1/clouds/k8s", dockerCloud("local", "unix:///run/other.sock")), http.StatusConflict, api.ReasonAlreadyExists, "")
	wantError(t, env.Do("GET", "/api/v1/clouds/nope", nil), http.StatusNotFound, api.ReasonNotFound, "")
	wantStatus(t, env.Do("DELETE", "/api/v1/clouds/k8s", nil), http.StatusNoContent)
	wantError(t, env.Do("GET", "/api/v1/clouds/k8s", nil), http.StatusNotFound, api.ReasonNotFound, "")
	wantError(t, env.Do("DELETE", "/api/v1/clouds/k8s", nil), http.StatusNotFound, api.ReasonNotFound, "")
}

func TestCloudPing(t *testing.T) {
	testimage.RequireDocker(t)
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	port := strconv.Itoa(closedPort(t))
	wantStatus(t, env.Do("POST", "/api/v1/clouds", dockerCloud("engine", "unix:///var/run/docker.sock")), http.StatusCreated)
	wantStatus(t, env.Do("POST", "/api/v1/clouds", dockerCloud("closed", "tcp://127.0.0.1:"+port)), http.StatusCreated)
	kube := kubeCloud("kube-closed")
	kube["kubernetes"].(map[string]any)["host"] = "https://127.0.0.1:" + port
	wantStatus(t, env.Do("POST", "/api/v1/clouds", kube), http.StatusCreated)

	for name, want := range map[string]bool{"engine": true, "closed": false, "kube-closed": false} {
		start := time.Now()
		r := env.Do("GET", "/api/v1/clouds/"+name+"/ping", nil)
		wantStatus(t, r, http.StatusOK)
		var ping struct {
			Name      string `json:"name"`
			Reachable bool   `json:"reachable"`
			LatencyMS *int64 `json:"latencyMs"`
		}
		r.JSON(t, &ping)
		if ping.Name != name || ping.Reachable != want || (ping.LatencyMS != nil) != want {
			t.Fatalf("ping %s: %s, want reachable=%v", name, r.Body, want)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("ping %s took %s", name, time.Since(start))
		}
	}
	wantError(t, env.Do("GET", "/api/v1/clouds/nope/ping", nil), http.StatusNotFound, api.ReasonNotFound, "")
	// An unreachable cloud's workers are a 502 that names no address.
	r := env.Do("GET", "/api/v1/clouds/kube-closed/workers?namespace=other", nil)
	wantStatus(t, r, http.StatusBadGateway)
	if bytes.Contains(r.Body, []byte("127.0.0.1")) {
		t.Fatalf("the error names the host: %s", r.Body)
	}
	wantError(t, env.Do("GET", "/api/v1/clouds/engine/workers?namespace=ns", nil), http.StatusBadRequest, api.ReasonInvalidField, "namespace")
}

func TestCloudWorkersDocker(t *testing.T) {
	cli := testimage.RequireDocker(t)
	image := testimage.Busybox(t, cli)
	f := newFixture(t, testenv.Options{Executor: docker.New(cli, t.TempDir())})
	wantStatus(t, f.env.Do("POST", "/api/v1/clouds", dockerCloud("engine", "unix:///var/run/docker.sock")), http.StatusCreated)
	f.pipeline(t, "sleepy", image, map[string]any{"unitTest": map[string]any{"command": []string{"sleep 300"}}})
	rec := f.start(t, map[string]any{"ref": "master"})
	f.waitStageRunning(t, rec.ID, "unitTest")

	workers := func() []model.WorkerInstance {
		r := f.env.Do("GET", "/api/v1/clouds/engine/workers", nil)
		wantStatus(t, r, http.StatusOK)
		var list struct {
			Metadata struct{ Total int } `json:"metadata"`
			Items    []model.WorkerInstance
		}
		r.JSON(t, &list)
		if list.Metadata.Total != len(list.Items) {
			t.Fatalf("workers list %+v", list)
		}
		return list.Items
	}
	find := func() *model.WorkerInstance {
		for _, w := range workers() {
			if w.RecordID == rec.ID && w.Status == "Running" {
				return &w
			}
		}
		return nil
	}
	waitUntil(t, "the record's running container in the workers list", func() bool { return find() != nil })
	w := find()
	if w.ProjectName != "demo" || w.PipelineName != "sleepy" || w.Name != docker.ContainerName(rec.ID, "unitTest") || w.CreationTime.IsZero() {
		t.Fatalf("worker %+v", w)
	}
	f.abort(t, rec.ID)
	f.waitTerminal(t, rec.ID)
	waitUntil(t, "the record to leave the workers list", func() bool {
		for _, w := range workers() {
			if w.RecordID == rec.ID {
				return false
			}
		}
		return true
	})
}

// TestCapacityQueue: with room for one record on the cloud, three records run one
// after another in the order they were made, the waiting ones Pending with their
// place; an aborted waiting record ends Aborted without having run and frees its place.
func TestCapacityQueue(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	wantStatus(t, f.env.Do("POST", "/api/v1/clouds", map[string]any{"name": model.DefaultCloudName, "type": "Local", "maxRunningRecords": 1}), http.StatusCreated)
	f.pipeline(t, "queued", "ignored-by-local", map[string]any{"unitTest": map[string]any{"command": []string{"sleep 3"}}})

	recs := []model.Record{f.start(t, map[string]any{"ref": "master"})}
	f.waitStageRunning(t, recs[0].ID, "unitTest")
	for i := 0; i < 3; i++ {
		recs = append(recs, f.start(t, map[string]any{"ref": "master"}))
	}
	// Places 1, 2, 3 behind the running record, in the order the records were made
	// (a record that asked first may show a better place until the others ask).
	for i, r := range recs[1:] {
		got := f.waitFor(t, r.ID, "queued", func(r model.Record) bool { return r.QueuePosition == int64(i+1) })
		if got.Status != model.StatusPending || got.QueuePosition != int64(i+1) || got.StageStatus.CodeCheckout != nil && got.StageStatus.CodeCheckout.StartTime != nil {
			t.Fatalf("waiting record %d: status %s position %d, stages %+v", i+1, got.Status, got.QueuePosition, got.StageStatus)
		}
	}
	// Abort the second in the queue: it ends without running, and the last moves up.
	wantStatus(t, f.env.Do("PATCH", f.basePath+"/records/"+recs[2].ID+"/status", map[string]any{"status": "Aborted"}), http.StatusOK)
	aborted := f.waitTerminal(t, recs[2].ID)
	if aborted.Status != model.StatusAborted || aborted.QueuePosition != 0 {
		t.Fatalf("aborted waiting record %+v", aborted)
	}
	if cs := aborted.StageStatus.CodeCheckout; cs != nil && cs.StartTime != nil {
		t.Fatalf("the aborted waiting record ran: %+v", cs)
	}
	f.waitFor(t, recs[3].ID, "second in the queue", func(r model.Record) bool { return r.QueuePosition == 2 || r.Status != model.StatusPending })

	order := []model.Record{recs[0], recs[1], recs[3]}
	var done []model.Record
	for _, r := range order {
		got := f.waitTerminal(t, r.ID)
		if got.Status != model.StatusSuccess || got.QueuePosition != 0 {
			t.Fatalf("record %+v", got)
		}
		done = append(done, got)
	}
	for i := 1; i < len(done); i++ {
		prevEnd := done[i-1].StageStatus.UnitTest.EndTime
		start := done[i].StageStatus.CodeCheckout.StartTime
		if start == nil || prevEnd == nil || start.Before(*prevEnd) {
			t.Fatalf("record %d started at %v, before record %d ended at %v", i, start, i-1, prevEnd)
		}
	}
}
