package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
	"github.com/cycloneci/cyclone/internal/testimage"
)

// The image stages end to end on the real Docker engine: a Dockerfile from a git
// repository, an integration test that reaches a service by name, and a push to a
// real registry (Debian's docker-registry) whose manifest is read back.

const (
	imgRegistryUser = "pusher"
	imgRegistryPass = "registry-s3cr3t-pass"
	imgServiceToken = "svc-token-s3cr3t"
)

type imgFixture struct {
	*fixture
	cli      *client.Client
	busybox  string
	registry *testenv.Registry
}

func newImgFixture(t *testing.T) *imgFixture {
	t.Helper()
	cli := testimage.RequireDocker(t)
	busybox := testimage.Busybox(t, cli)
	reg := testenv.StartRegistry(t, imgRegistryUser, imgRegistryPass)
	f := newFixture(t, testenv.Options{Executor: docker.New(cli, t.TempDir())})
	f.repoURL = f.git.Repo("imgapp", map[string]string{
		"Dockerfile":      "FROM " + busybox + "\nCOPY site/ /www/\nCOPY build.out /build.out\n",
		"site/index.html": "hello-from-web\n",
	})
	return &imgFixture{fixture: f, cli: cli, busybox: busybox, registry: reg}
}

// project creates a project whose registry is the test registry, with the password
// given.
func (f *imgFixture) project(t *testing.T, name, password string) {
	t.Helper()
	body := projectBody(name)
	body["registry"] = map[string]any{"server": "http://" + f.registry.Host, "repository": "team", "username": imgRegistryUser, "password": password}
	wantStatus(t, f.env.Do("POST", "/api/v1/projects", body), http.StatusCreated)
	t.Cleanup(func() { f.removeImages(name) })
}

// removeImages removes the images the project's records built.
func (f *imgFixture) removeImages(project string) {
	ctx := context.Background()
	list, err := f.cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", executor.LabelProject+"="+project))})
	if err != nil {
		return
	}
	for _, img := range list {
		_, _ = f.cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
	}
}

// pipeline creates a pipeline of the project checking out the test repository
// before the given stages, and points the fixture at it.
func (f *imgFixture) pipeline(t *testing.T, project, name string, stages map[string]any) {
	t.Helper()
	stages["codeCheckout"] = map[string]any{"codeSources": []any{map[string]any{
		"type": "Github", "main": true, "gitHub": map[string]any{"url": f.repoURL},
	}}}
	body := map[string]any{"name": name, "build": map[string]any{
		"builderImage": map[string]any{"image": f.busybox},
		"stages":       stages,
	}}
	wantStatus(t, f.env.Do("POST", "/api/v1/projects/"+project+"/pipelines", body), http.StatusCreated)
	f.basePath = "/api/v1/projects/" + project + "/pipelines/" + name
}

// run starts a record named name (or by its commit when name is empty) on the
// fixture's pipeline and waits for its end.
func (f *imgFixture) run(t *testing.T, name string) model.Record {
	t.Helper()
	params := map[string]any{"ref": "master"}
	if name != "" {
		params["name"] = name
	}
	return f.waitEnd(t, f.start(t, params).ID)
}

func (f *imgFixture) waitEnd(t *testing.T, id string) model.Record {
	t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		rec := f.get(t, id)
		if model.IsTerminal(rec.Status) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record never ended: %+v", rec)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// log returns the stored log of a stage or of one of its tasks.
func (f *imgFixture) log(t *testing.T, id, stage, task string) string {
	t.Helper()
	path := f.basePath + "/records/" + id + "/logs"
	if stage != "" {
		path += "?stage=" + stage
	}
	if task != "" {
		path += "&task=" + task
	}
	r := f.env.Do("GET", path, nil)
	wantStatus(t, r, http.StatusOK)
	return string(r.Body)
}

// noLeftovers asserts that nothing the record made is left on the engine.
func (f *imgFixture) noLeftovers(t *testing.T, id string) {
	t.Helper()
	args := filters.NewArgs(filters.Arg("label", executor.LabelRecord+"="+id))
	waitUntil(t, "the record's containers and network to go", func() bool {
		cs, err := f.cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: args})
		if err != nil {
			t.Fatal(err)
		}
		ns, err := f.cli.NetworkList(context.Background(), network.ListOptions{Filters: args})
		if err != nil {
			t.Fatal(err)
		}
		return len(cs) == 0 && len(ns) == 0
	})
}

// manifest reads a manifest back from the registry and checks it is the image the
// engine built.
func (f *imgFixture) wantManifest(t *testing.T, name, tag string) {
	t.Helper()
	status, mediaType, body := f.registry.Manifest(name, tag)
	if status != http.StatusOK || mediaType != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Fatalf("manifest %s:%s: status %d, type %q: %s", name, tag, status, mediaType, body)
	}
	var m struct {
		Config struct{ Digest string }   `json:"config"`
		Layers []struct{ Digest string } `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	img, err := f.cli.ImageInspect(context.Background(), f.registry.Host+"/"+name+":"+tag)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != img.ID || len(m.Layers) == 0 {
		t.Fatalf("manifest %s:%s has config %s and %d layers; the local image is %s", name, tag, m.Config.Digest, len(m.Layers), img.ID)
	}
}

func (f *imgFixture) wantNoManifest(t *testing.T, name, tag string) {
	t.Helper()
	if status, _, body := f.registry.Manifest(name, tag); status != http.StatusNotFound {
		t.Fatalf("manifest %s:%s: status %d, want 404: %s", name, tag, status, body)
	}
}

// imgStages builds web (the repository's Dockerfile) and tools (an inline
// Dockerfile), tests web through a service running web itself, and releases both
// by the given policies.
func imgStages(testCommands []string, allowFailure bool, policies map[string]string) map[string]any {
	var pols []any
	for _, img := range []string{"web", "tools"} {
		pols = append(pols, map[string]any{"imageName": img, "type": policies[img]})
	}
	return map[string]any{
		// Outputs of unitTest and package stay in the workspace for the image build
		// (and so for the integration test).
		"unitTest": map[string]any{"command": []string{"echo unit-output > unit.out"}},
		"package":  map[string]any{"command": []string{"cat unit.out > build.out", "echo built-by-package >> build.out"}},
		"imageBuild": map[string]any{"buildInfos": []any{
			map[string]any{"imageName": "web"},
			map[string]any{"taskName": "tools-task", "imageName": "tools", "contextDir": "site",
				"dockerfile": "FROM " + testimage.BusyboxImage + "\nCOPY index.html /tools/index.html\nRUN echo tools-built\n"},
		}},
		"integrationTest": map[string]any{
			"allowFailure": allowFailure,
			"config": map[string]any{
				"imageName": "web",
				"command":   testCommands,
				"envVars":   []any{map[string]any{"name": "IT_TOKEN", "value": imgServiceToken, "secret": true}},
			},
			"services": []any{map[string]any{
				"name": "websrv", "image": "web",
				"command": []string{"/bin/sh", "-ec", `echo "$SVC_TOKEN" > /www/token.txt; exec httpd -f -p 8080 -h /www`},
				"envVars": []any{map[string]any{"name": "SVC_TOKEN", "value": imgServiceToken, "secret": true}},
			}},
		},
		"imageRelease": map[string]any{"releasePolicies": pols},
	}
}

// integrationCommands reach the service by its name and check the package output
// and both secret variables (the service's, served back, and the test's).
var integrationCommands = []string{
	"cat /build.out",
	`i=0; until wget -q -O /tmp/page http://websrv:8080/index.html; do i=$((i+1)); [ $i -lt 100 ]; sleep 0.1; done`,
	"grep hello-from-web /tmp/page",
	`wget -q -O /tmp/token http://websrv:8080/token.txt && test "$(cat /tmp/token)" = "$IT_TOKEN"`,
}

func TestImageStages(t *testing.T) {
	f := newImgFixture(t)
	f.project(t, "imgs", imgRegistryPass)
	host := f.registry.Host

	t.Run("build, test and release", func(t *testing.T) {
		f.pipeline(t, "imgs", "full", imgStages(integrationCommands, false, map[string]string{"web": "Always", "tools": "IntegrationTestSuccess"}))
		rec := f.run(t, "v1")
		ss := rec.StageStatus
		if rec.Status != model.StatusSuccess {
			t.Fatalf("record %s %q; stages %+v %+v %+v %+v\nintegration log:\n%s", rec.Status, rec.ErrorMessage,
				ss.Package, ss.ImageBuild, ss.IntegrationTest, ss.ImageRelease, f.log(t, rec.ID, "integrationTest", ""))
		}
		web, tools := host+"/team/web:v1", host+"/team/tools:v1"
		wantTasks(t, "imageBuild", ss.ImageBuild, map[string]string{"web": web, "tools-task": tools})
		if ss.IntegrationTest == nil || ss.IntegrationTest.Status != model.StatusSuccess {
			t.Fatalf("integrationTest %+v", ss.IntegrationTest)
		}
		wantTasks(t, "imageRelease", ss.ImageRelease, map[string]string{"web": web, "tools": tools})
		if !slices.Equal(ss.ImageRelease.Images, []string{web, tools}) {
			t.Fatalf("released images %v", ss.ImageRelease.Images)
		}
		f.wantManifest(t, "team/web", "v1")
		f.wantManifest(t, "team/tools", "v1")

		webLog := f.log(t, rec.ID, "imageBuild", "web")
		for _, want := range []string{"Building image " + web, ": FROM " + f.busybox, "Successfully tagged " + web} {
			if !strings.Contains(webLog, want) {
				t.Fatalf("web's build log lacks %q:\n%s", want, webLog)
			}
		}
		if toolsLog := f.log(t, rec.ID, "imageBuild", "tools-task"); !strings.Contains(toolsLog, "tools-built") || strings.Contains(toolsLog, "hello-from-web") {
			t.Fatalf("tools' build log:\n%s", toolsLog)
		}
		itLog := f.log(t, rec.ID, "integrationTest", "")
		for _, want := range []string{"Starting service websrv (" + web + ")", "unit-output\nbuilt-by-package", "Removed the services"} {
			if !strings.Contains(itLog, want) {
				t.Fatalf("integration test log lacks %q:\n%s", want, itLog)
			}
		}
		relLog := f.log(t, rec.ID, "imageRelease", "web")
		if !strings.Contains(relLog, "Pushing image "+web) || !strings.Contains(relLog, "digest: sha256:") {
			t.Fatalf("web's release log:\n%s", relLog)
		}
		all := f.log(t, rec.ID, "", "")
		if strings.Contains(all, imgRegistryPass) || strings.Contains(all, imgServiceToken) {
			t.Fatalf("a secret is in the logs:\n%s", all)
		}
		f.noLeftovers(t, rec.ID)
	})

	t.Run("IntegrationTestSuccess skips the push after a failed integration test", func(t *testing.T) {
		failing := append(slices.Clone(integrationCommands), "echo integration-fails; exit 3")
		f.pipeline(t, "imgs", "flaky", imgStages(failing, true, map[string]string{"web": "IntegrationTestSuccess", "tools": "Always"}))
		// Unnamed: the images are tagged with the name the checkout gives the record.
		rec := f.run(t, "")
		tag := rec.Name
		if !strings.HasPrefix(tag, f.git.Head("imgapp")[:7]+"-") {
			t.Fatalf("record name %q", tag)
		}
		ss := rec.StageStatus
		if ss.IntegrationTest == nil || ss.IntegrationTest.Status != model.StatusFailed || !strings.Contains(ss.IntegrationTest.ErrorMessage, "exited with code 3") {
			t.Fatalf("integrationTest %+v", ss.IntegrationTest)
		}
		if ss.ImageRelease == nil || ss.ImageRelease.Status != model.StatusSuccess {
			t.Fatalf("imageRelease %+v (record %s %q)", ss.ImageRelease, rec.Status, rec.ErrorMessage)
		}
		tools := host + "/team/tools:" + tag
		wantTasks(t, "imageRelease", ss.ImageRelease, map[string]string{"tools": tools})
		if !slices.Equal(ss.ImageRelease.Images, []string{tools}) {
			t.Fatalf("released images %v", ss.ImageRelease.Images)
		}
		f.wantManifest(t, "team/tools", tag)
		f.wantNoManifest(t, "team/web", tag)
		wantTasks(t, "imageBuild", ss.ImageBuild, map[string]string{"web": host + "/team/web:" + tag, "tools-task": tools})
		if relLog := f.log(t, rec.ID, "imageRelease", ""); !strings.Contains(relLog, "Image web is not released") {
			t.Fatalf("release log:\n%s", relLog)
		}
		f.noLeftovers(t, rec.ID)
	})

	t.Run("abort removes the services", func(t *testing.T) {
		f.pipeline(t, "imgs", "slow", map[string]any{"integrationTest": map[string]any{
			"config":   map[string]any{"imageName": f.busybox, "command": []string{"sleep 300"}},
			"services": []any{map[string]any{"name": "slowsvc", "image": f.busybox, "command": []string{"sleep", "300"}}},
		}})
		rec := f.start(t, map[string]any{"ref": "master"})
		services := filters.NewArgs(filters.Arg("label", executor.LabelRecord+"="+rec.ID), filters.Arg("label", executor.LabelService+"=slowsvc"))
		waitUntil(t, "the service and the test to run", func() bool {
			cs, err := f.cli.ContainerList(context.Background(), container.ListOptions{Filters: services})
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.cli.ContainerInspect(context.Background(), docker.ContainerName(rec.ID, "integrationTest"))
			return len(cs) == 1 && err == nil
		})
		f.abort(t, rec.ID)
		done := f.waitEnd(t, rec.ID)
		if done.Status != model.StatusAborted || done.StageStatus.IntegrationTest.Status != model.StatusAborted {
			t.Fatalf("aborted record %s, integrationTest %+v", done.Status, done.StageStatus.IntegrationTest)
		}
		f.noLeftovers(t, rec.ID)
		if log := f.log(t, rec.ID, "integrationTest", ""); !strings.Contains(log, "Removed the services") {
			t.Fatalf("integration test log:\n%s", log)
		}
	})
}

// wantTasks checks a multi-task stage: Success, and exactly the tasks given (name ->
// image), each Success with its times.
func wantTasks(t *testing.T, stage string, st *model.TasksStatus, want map[string]string) {
	t.Helper()
	if st == nil || st.Status != model.StatusSuccess || len(st.Tasks) != len(want) {
		t.Fatalf("%s: %+v", stage, st)
	}
	for _, task := range st.Tasks {
		if task.Status != model.StatusSuccess || want[task.Name] != task.Image || task.StartTime == nil || task.EndTime == nil || task.EndTime.Before(*task.StartTime) {
			t.Fatalf("%s task %+v, want image %q", stage, task, want[task.Name])
		}
	}
}

// The pipeline's own mistakes fail their stage with a clear message, and leave
// nothing behind.
func TestImageStagesFailures(t *testing.T) {
	f := newImgFixture(t)
	f.project(t, "imgbad", imgRegistryPass)
	f.project(t, "imgauth", "wrong-password")
	build := func(info map[string]any) map[string]any {
		return map[string]any{"imageBuild": map[string]any{"buildInfos": []any{info}}}
	}
	cases := []struct {
		name, project, stage, want, logTask, logWant string
		stages                                       map[string]any
	}{
		{name: "missing-dockerfile", project: "imgbad", stage: "imageBuild",
			want:   "the Dockerfile nope/Dockerfile is not in the workspace",
			stages: build(map[string]any{"imageName": "web", "dockerfilePath": "nope/Dockerfile"})},
		{name: "context-escapes", project: "imgbad", stage: "imageBuild",
			want:   `contextDir "../.." is not inside the workspace`,
			stages: build(map[string]any{"imageName": "web", "contextDir": "../.."})},
		{name: "failing-build", project: "imgbad", stage: "imageBuild",
			want: "returned a non-zero code: 7", logTask: "web", logWant: "about-to-fail",
			stages: build(map[string]any{"imageName": "web", "dockerfile": "FROM " + testimage.BusyboxImage + "\nRUN echo about-to-fail && exit 7\n"})},
		{name: "service-image-missing", project: "imgbad", stage: "integrationTest",
			want: "service db: image cyclone-test/no-such-image:1 is not on the Docker engine",
			stages: map[string]any{"integrationTest": map[string]any{
				"config":   map[string]any{"imageName": testimage.BusyboxImage, "command": []string{"true"}},
				"services": []any{map[string]any{"name": "db", "image": "cyclone-test/no-such-image:1"}},
			}}},
		{name: "registry-auth-refused", project: "imgauth", stage: "imageRelease",
			want: "push of " + f.registry.Host + "/team/web:bad failed",
			stages: map[string]any{
				"imageBuild":   map[string]any{"buildInfos": []any{map[string]any{"imageName": "web"}}},
				"package":      map[string]any{"command": []string{"touch build.out"}},
				"imageRelease": map[string]any{"releasePolicies": []any{map[string]any{"imageName": "web", "type": "Always"}}},
			}},
	}
	ids := make([]string, len(cases))
	paths := make([]string, len(cases))
	for i, c := range cases {
		f.pipeline(t, c.project, c.name, c.stages)
		ids[i], paths[i] = f.start(t, map[string]any{"ref": "master", "name": "bad"}).ID, f.basePath
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.basePath = paths[i]
			rec := f.waitEnd(t, ids[i])
			st := rec.StageStatus.Of(c.stage)
			t.Logf("record error: %s", rec.ErrorMessage)
			if rec.Status != model.StatusFailed || st == nil || st.Status != model.StatusFailed ||
				!strings.Contains(st.ErrorMessage, c.want) || !strings.Contains(rec.ErrorMessage, c.want) {
				t.Fatalf("record %s %q, %s %+v; want Failed with %q", rec.Status, rec.ErrorMessage, c.stage, st, c.want)
			}
			if c.logWant != "" {
				if log := f.log(t, rec.ID, c.stage, c.logTask); !strings.Contains(log, c.logWant) || !strings.Contains(log, c.want) {
					t.Fatalf("%s log lacks %q and %q:\n%s", c.stage, c.logWant, c.want, log)
				}
			}
			if c.stage == "imageRelease" {
				if strings.Contains(rec.ErrorMessage, "wrong-password") {
					t.Fatalf("the password is in the error: %s", rec.ErrorMessage)
				}
				f.wantNoManifest(t, "team/web", "bad")
			}
			f.noLeftovers(t, rec.ID)
		})
	}
}

// Without a Docker executor the image stages fail with a clear message.
func TestImageStagesNeedDocker(t *testing.T) {
	f := newFixture(t, testenv.Options{})
	f.pipeline(t, "local-images", "x", map[string]any{
		"imageBuild": map[string]any{"buildInfos": []any{map[string]any{"imageName": "web"}}},
	})
	rec := f.waitTerminal(t, f.start(t, map[string]any{"ref": "master"}).ID)
	if rec.Status != model.StatusFailed || rec.StageStatus.ImageBuild == nil ||
		!strings.Contains(rec.StageStatus.ImageBuild.ErrorMessage, "imageBuild needs the Docker executor") {
		t.Fatalf("record %s %q, imageBuild %+v", rec.Status, rec.ErrorMessage, rec.StageStatus.ImageBuild)
	}
}
