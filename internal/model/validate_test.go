package model_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
)

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"demo": true, "a": true, "my-app.v2_x": true, "0day": true,
		"": false, "Demo": false, "-demo": false, "demo-": false, "de--mo": false, "de mo": false,
		strings.Repeat("a", model.MaxNameLength): true, strings.Repeat("a", model.MaxNameLength+1): false,
	} {
		if got := model.ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestNameFromAlias(t *testing.T) {
	for alias, want := range map[string]string{
		"My Project":      "my-project",
		"  Hello, World!": "hello-world",
		"already-fine":    "already-fine",
		"!!!":             "",
		"Ünïcode Näme":    "n-code-n-me",
	} {
		if got := model.NameFromAlias(alias); got != want {
			t.Errorf("NameFromAlias(%q) = %q, want %q", alias, got, want)
		}
	}
	if got := model.NameFromAlias(strings.Repeat("x", 200)); !model.ValidName(got) || len(got) > model.MaxNameLength-7 {
		t.Errorf("long alias gave %q", got)
	}
}

func TestValidateRef(t *testing.T) {
	good := []string{"master", "refs/heads/main", "refs/tags/v1.0.0", "feature/x-y", "a1b2c3d"}
	bad := []string{"", "--upload-pack=x", "-x", "a..b", "a b", "a\x01b", "a~1", "a^", "a:b", "a?", "a*", "a[", `a\b`,
		"a.lock", "a/", "/a", "a//b", "a/.b", "@", "a@{1}", "a."}
	for _, ref := range good {
		if err := model.ValidateRef("ref", ref); err != nil {
			t.Errorf("ValidateRef(%q): %v", ref, err)
		}
	}
	for _, ref := range bad {
		err := model.ValidateRef("ref", ref)
		var fe *model.FieldError
		if !errors.As(err, &fe) || fe.Field != "ref" {
			t.Errorf("ValidateRef(%q) = %v, want a FieldError on ref", ref, err)
		}
	}
}

func TestProjectNormalize(t *testing.T) {
	p := &model.Project{Name: "p", SCM: &model.SCMConfig{Type: "gItLaB", Server: "https://gitlab.com"}}
	if err := p.NormalizeAndValidate(); err != nil || p.SCM.Type != model.SCMGitlab {
		t.Fatalf("got %v, type %q", err, p.SCM.Type)
	}
	p.Description = strings.Repeat("é", 100) // characters, not bytes
	if err := p.NormalizeAndValidate(); err != nil {
		t.Fatalf("100 characters refused: %v", err)
	}
}

func TestStagesOrderAndAllowFailure(t *testing.T) {
	s := &model.Stages{
		ImageRelease: &model.ImageReleaseStage{AllowFailure: true},
		Package:      &model.CommandStage{Command: []string{"x"}, AllowFailure: true},
		UnitTest:     &model.CommandStage{Command: []string{"x"}, AllowFailure: true},
		CodeCheckout: &model.CodeCheckoutStage{},
	}
	got := strings.Join(s.Configured(), ",")
	if got != "codeCheckout,unitTest,package,imageRelease" {
		t.Fatalf("Configured() = %s", got)
	}
	for stage, want := range map[string]bool{"package": true, "imageRelease": true, "unitTest": false, "codeCheckout": false, "codeScan": false} {
		if s.AllowFailure(stage) != want {
			t.Errorf("AllowFailure(%s) = %v, want %v (unitTest and codeCheckout may never fail)", stage, !want, want)
		}
	}
}

func TestRepoURLs(t *testing.T) {
	pipeline := func(url string) *model.Pipeline {
		return &model.Pipeline{Name: "p", Build: &model.Build{
			BuilderImage: &model.BuilderImage{Image: "x"},
			Stages: &model.Stages{CodeCheckout: &model.CodeCheckoutStage{CodeSources: []model.CodeSource{
				{Type: "Github", Main: true, GitHub: &model.GitSource{URL: url}},
			}}},
		}}
	}
	for url, ok := range map[string]bool{
		"https://github.com/a/b.git": true, "http://10.0.0.1:3000/a.git": true, "ssh://git@host/a.git": true,
		"git@github.com:a/b.git": true, "svn://host/repo": true,
		"https://bot:ghp_SECRET@github.com/a/b.git": false, "https://bot@github.com/a/b.git": true,
		"/etc": false, "file:///etc": false, "ftp://host/a": false, "--upload-pack=x": false, "": false,
	} {
		err := pipeline(url).NormalizeAndValidate()
		if (err == nil) != ok {
			t.Errorf("repository URL %q: error %v, want ok=%v", url, err, ok)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET") {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
}

func TestPipelineFieldErrors(t *testing.T) {
	base := func() *model.Pipeline {
		return &model.Pipeline{Name: "p", Build: &model.Build{
			BuilderImage: &model.BuilderImage{Image: "x"},
			Stages: &model.Stages{CodeCheckout: &model.CodeCheckoutStage{CodeSources: []model.CodeSource{
				{Type: "Github", Main: true, GitHub: &model.GitSource{URL: "https://github.com/a/b"}},
			}}},
		}}
	}
	cases := map[string]struct {
		mut   func(p *model.Pipeline)
		field string
	}{
		"duplicate env var": {func(p *model.Pipeline) {
			p.Build.BuilderImage.EnvVars = []model.EnvVar{{Name: "A", Value: "1"}, {Name: "A", Value: "2"}}
		}, "build.builderImage.envVars[1].name"},
		"bad env var name": {func(p *model.Pipeline) { p.Build.BuilderImage.EnvVars = []model.EnvVar{{Name: "1A"}} }, "build.builderImage.envVars[0].name"},
		"unknown code source type": {func(p *model.Pipeline) { p.Build.Stages.CodeCheckout.CodeSources[0].Type = "Bitbucket" },
			"build.stages.codeCheckout.codeSources[0].type"},
		"unknown stage in a cron": {func(p *model.Pipeline) {
			p.AutoTrigger = &model.AutoTrigger{CronTrigger: &model.CronTrigger{Crons: []model.Cron{{Expression: "* * * * *", Stages: []string{"deploy"}}}}}
		}, "autoTrigger.cronTrigger.crons[0].stages[0]"},
		"two main code sources": {func(p *model.Pipeline) {
			src := p.Build.Stages.CodeCheckout.CodeSources[0]
			p.Build.Stages.CodeCheckout.CodeSources = append(p.Build.Stages.CodeCheckout.CodeSources, src)
		}, "build.stages.codeCheckout.codeSources"},
		"no main code source": {func(p *model.Pipeline) { p.Build.Stages.CodeCheckout.CodeSources[0].Main = false },
			"build.stages.codeCheckout.codeSources"},
		"missing builder image": {func(p *model.Pipeline) { p.Build.BuilderImage.Image = " " }, "build.builderImage.image"},
		"no stage":              {func(p *model.Pipeline) { p.Build.Stages = &model.Stages{} }, "build.stages"},
		"empty unitTest command": {func(p *model.Pipeline) { p.Build.Stages.UnitTest = &model.CommandStage{} },
			"build.stages.unitTest.command"},
		"empty package command": {func(p *model.Pipeline) { p.Build.Stages.Package = &model.CommandStage{Command: []string{}} },
			"build.stages.package.command"},
		"blank package command line": {func(p *model.Pipeline) { p.Build.Stages.Package = &model.CommandStage{Command: []string{"make", " "}} },
			"build.stages.package.command[1]"},
		"no image to build": {func(p *model.Pipeline) { p.Build.Stages.ImageBuild = &model.ImageBuildStage{} },
			"build.stages.imageBuild.buildInfos"},
		"image to build without a name": {func(p *model.Pipeline) {
			p.Build.Stages.ImageBuild = &model.ImageBuildStage{BuildInfos: []model.BuildInfo{{ImageName: "web"}, {}}}
		}, "build.stages.imageBuild.buildInfos[1].imageName"},
		"integration test without image": {func(p *model.Pipeline) {
			p.Build.Stages.IntegrationTest = &model.IntegrationTestStage{Config: &model.IntegrationTestConfig{Command: []string{"make it"}}}
		}, "build.stages.integrationTest.config.imageName"},
		"integration test without command": {func(p *model.Pipeline) {
			p.Build.Stages.IntegrationTest = &model.IntegrationTestStage{Config: &model.IntegrationTestConfig{ImageName: "web"}}
		}, "build.stages.integrationTest.config.command"},
		"service with a bad name": {func(p *model.Pipeline) {
			p.Build.Stages.IntegrationTest = &model.IntegrationTestStage{
				Config:   &model.IntegrationTestConfig{ImageName: "web", Command: []string{"make it"}},
				Services: []model.Service{{Name: "db", Image: "postgres"}, {Name: "Not A Name", Image: "redis"}},
			}
		}, "build.stages.integrationTest.services[1].name"},
		"service without image": {func(p *model.Pipeline) {
			p.Build.Stages.IntegrationTest = &model.IntegrationTestStage{
				Config:   &model.IntegrationTestConfig{ImageName: "web", Command: []string{"make it"}},
				Services: []model.Service{{Name: "db"}},
			}
		}, "build.stages.integrationTest.services[0].image"},
		"release without policies": {func(p *model.Pipeline) { p.Build.Stages.ImageRelease = &model.ImageReleaseStage{} },
			"build.stages.imageRelease.releasePolicies"},
		"release policy of an unknown type": {func(p *model.Pipeline) {
			p.Build.Stages.ImageRelease = &model.ImageReleaseStage{ReleasePolicies: []model.ReleasePolicy{{ImageName: "web", Type: "Sometimes"}}}
		}, "build.stages.imageRelease.releasePolicies[0].type"},
		"singular releasePolicy key named as sent": {func(p *model.Pipeline) {
			p.Build.Stages.ImageRelease = &model.ImageReleaseStage{
				ReleasePolicies: []model.ReleasePolicy{{ImageName: "web", Type: model.ReleaseAlways}},
				ReleasePolicy:   []model.ReleasePolicy{{ImageName: "api", Type: model.ReleaseAlways}, {ImageName: "Bad Name", Type: model.ReleaseAlways}},
			}
		}, "build.stages.imageRelease.releasePolicy[1].imageName"},
		"bad time zone": {func(p *model.Pipeline) {
			p.AutoTrigger = &model.AutoTrigger{CronTrigger: &model.CronTrigger{Crons: []model.Cron{{Expression: "* * * * *", Timezone: "Mars/Olympus"}}}}
		}, "autoTrigger.cronTrigger.crons[0].timezone"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := base()
			tc.mut(p)
			var fe *model.FieldError
			if err := p.NormalizeAndValidate(); !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("got %v, want an error on %s", err, tc.field)
			}
		})
	}
	if err := base().NormalizeAndValidate(); err != nil {
		t.Fatalf("valid pipeline refused: %v", err)
	}
}
