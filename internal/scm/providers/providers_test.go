package providers

import (
	"errors"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/scm/github"
	"github.com/cycloneci/cyclone/internal/scm/gitlab"
	"github.com/cycloneci/cyclone/internal/scm/svn"
)

func TestNewPicksByType(t *testing.T) {
	creds := scm.Credentials{Username: "alice", Token: "tok", Password: "pw"}
	for typ, check := range map[string]func(scm.Provider) bool{
		model.SCMGithub: func(p scm.Provider) bool { _, ok := p.(*github.Provider); return ok },
		model.SCMGitlab: func(p scm.Provider) bool { _, ok := p.(*gitlab.Provider); return ok },
		model.SCMSVN:    func(p scm.Provider) bool { _, ok := p.(*svn.Provider); return ok },
	} {
		p, err := New(scm.Config{Type: typ, Server: "http://127.0.0.1:1", Credentials: creds})
		if err != nil || !check(p) {
			t.Errorf("New(%s) = %T, %v", typ, p, err)
		}
	}
	p, err := New(scm.Config{Type: model.SCMSVN, Server: "svn://127.0.0.1:1/repos", Credentials: creds})
	if err != nil || p == nil {
		t.Errorf("svn:// for SVN: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, cfg := range []scm.Config{
		{Type: "Bitbucket", Server: "http://127.0.0.1"},
		{Type: "github", Server: "http://127.0.0.1"},
	} {
		if p, err := New(cfg); !errors.Is(err, scm.ErrUnsupported) || p != nil {
			t.Errorf("New(%+v) = %v, %v; want ErrUnsupported", cfg, p, err)
		}
	}
	for _, cfg := range []scm.Config{
		{Type: model.SCMGithub, Server: "http://169.254.169.254"},
		{Type: model.SCMGitlab, Server: "http://[fe80::1]"},
		{Type: model.SCMGithub, Server: "file:///etc/passwd"},
		{Type: model.SCMGitlab, Server: "svn://127.0.0.1"},
		{Type: model.SCMSVN, Server: "https://u:p@127.0.0.1/svn"},
		{Type: model.SCMSVN, Server: ""},
	} {
		p, err := New(cfg)
		if !errors.Is(err, scm.ErrBadURL) {
			t.Errorf("New(%+v) = %v, want ErrBadURL", cfg, err)
		}
		if p != nil {
			t.Errorf("New(%+v) returned a provider with an error", cfg)
		}
	}
	// An implementation's own refusal is an untyped nil.
	p, err := New(scm.Config{Type: model.SCMGitlab, Server: "http://127.0.0.1:1"})
	if err == nil || p != nil {
		t.Errorf("GitLab without credentials = %v, %v", p, err)
	}
}
