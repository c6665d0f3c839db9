// Package providers picks the scm.Provider for a project's SCM type. It is the only
// place that knows every implementation; the API and the activities take a
// func(scm.Config) (scm.Provider, error) and get New in production.
package providers

import (
	"fmt"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/scm/github"
	"github.com/cycloneci/cyclone/internal/scm/gitlab"
	"github.com/cycloneci/cyclone/internal/scm/svn"
)

// New checks cfg.Server with scm.CheckURL (the error wraps scm.ErrBadURL, or
// scm.ErrUnreachable when the name cannot be resolved right now) and returns the
// Provider for cfg.Type: model.SCMGithub, model.SCMGitlab or model.SCMSVN. It sends
// no request to the SCM.
func New(cfg scm.Config) (scm.Provider, error) {
	switch cfg.Type {
	case model.SCMGithub, model.SCMGitlab, model.SCMSVN:
	default:
		return nil, fmt.Errorf("SCM type %q is not one of Github, Gitlab, SVN: %w", cfg.Type, scm.ErrUnsupported)
	}
	if err := scm.CheckURL(cfg.Type, cfg.Server); err != nil {
		return nil, err
	}
	var (
		p   scm.Provider
		err error
	)
	switch cfg.Type {
	case model.SCMGithub:
		p, err = nonNil(github.New(cfg))
	case model.SCMGitlab:
		p, err = nonNil(gitlab.New(cfg))
	default:
		p, err = nonNil(svn.New(cfg))
	}
	return p, err
}

// nonNil turns an implementation's (nil, err) into an untyped nil Provider.
func nonNil[P scm.Provider](p P, err error) (scm.Provider, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}
