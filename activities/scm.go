package activities

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
	"github.com/cycloneci/cyclone/internal/store"
)

// SCMOpener opens the SCM of a project (providers.New in production).
type SCMOpener func(cfg scm.Config) (scm.Provider, error)

// ErrTypeSCM marks an SCM refusal (credentials, permissions, unknown repository)
// that a retry would not change.
const ErrTypeSCM = "SCMRefused"

// CreateSCMTag tags the record's checked-out commit with the record's name on the
// project's SCM. On Subversion the tag is a copy of exactly the directory the
// record checked out (the source's URL and path and the ref's path, as svnTarget
// makes them) at the checked-out revision, into the tags/ directory of its
// trunk/branches/tags layout (see svn.TagsDir); a checkout in no such layout (the
// repository root, say) cannot be tagged and fails the tag.
func (a *Activities) CreateSCMTag(ctx context.Context, in RecordInput) error {
	rec, prov, cfg, err := a.recordSCM(ctx, in)
	if err != nil {
		return err
	}
	commit := checkedOutCommit(rec)
	if commit == "" {
		return temporal.NewNonRetryableApplicationError("createScmTag: the record checked out no commit", ErrTypeSCM, nil)
	}
	repo, err := tagRepo(cfg, in)
	if err != nil {
		return temporal.NewNonRetryableApplicationError("createScmTag: "+err.Error(), ErrTypeSCM, nil)
	}
	if err := prov.CreateTag(ctx, repo, rec.Name, commit); err != nil {
		return scmActivityError("createScmTag", err)
	}
	a.recordLogger(in).Info("SCM tag created", "tag", rec.Name, "commit", commit)
	return nil
}

// tagRepo is what the SCM's CreateTag takes: the main repository's name, or on
// Subversion the path below the server of the directory the record checked out.
func tagRepo(cfg scm.Config, in RecordInput) (string, error) {
	src := in.Build.Stages.CodeCheckout.Main()
	if cfg.Type != model.SCMSVN {
		return RepoName(cfg, src.URL())
	}
	target, _, err := svnTarget(src, in.Params.Ref)
	if err != nil {
		return "", err
	}
	return RepoName(cfg, target)
}

// ReportCommitStatus shows the record's status next to its commit on the SCM,
// with a link back to the record.
func (a *Activities) ReportCommitStatus(ctx context.Context, in RecordInput, status string) error {
	rec, prov, cfg, err := a.recordSCM(ctx, in)
	if err != nil {
		return err
	}
	commit := checkedOutCommit(rec)
	if commit == "" {
		return nil // nothing was checked out: no commit to report on
	}
	repo, err := RepoName(cfg, in.Build.Stages.CodeCheckout.Main().URL())
	if err != nil {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeSCM, nil)
	}
	return scmActivityError("report the commit status", a.reportStatus(ctx, in, prov, repo, commit, status))
}

// reportPending shows a freshly checked-out commit as pending. It is best effort:
// an SCM that is down does not stop the record.
func (a *Activities) reportPending(ctx context.Context, in StageInput, cfg scm.Config, commit string) {
	err := func() error {
		if a.SCM == nil {
			return nil
		}
		src := in.Record.Build.Stages.CodeCheckout.Main()
		repo, err := RepoName(cfg, src.URL())
		if err != nil {
			return err
		}
		prov, err := a.SCM(cfg)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return a.reportStatus(ctx, in.Record, prov, repo, commit, model.StatusRunning)
	}()
	if err != nil {
		a.recordLogger(in.Record).Warn("report the pending commit status", "error", err)
	}
}

func (a *Activities) reportStatus(ctx context.Context, in RecordInput, prov scm.Provider, repo, commit, status string) error {
	state, desc := scm.StateError, "Cyclone could not run the record"
	switch status {
	case model.StatusPending, model.StatusRunning:
		state, desc = scm.StatePending, "Cyclone is running the record"
	case model.StatusSuccess:
		state, desc = scm.StateSuccess, "Cyclone record succeeded"
	case model.StatusFailed:
		state, desc = scm.StateFailure, "Cyclone record failed"
	case model.StatusAborted:
		state, desc = scm.StateError, "Cyclone record aborted"
	}
	return prov.SetCommitStatus(ctx, repo, commit, scm.CommitStatus{
		State:       state,
		TargetURL:   a.recordURL(in),
		Description: desc,
		Context:     "cyclone/" + in.Pipeline,
	})
}

// recordURL links to the record on the API.
func (a *Activities) recordURL(in RecordInput) string {
	base := strings.TrimRight(a.PublicURL, "/")
	return fmt.Sprintf("%s/api/v1/projects/%s/pipelines/%s/records/%s",
		base, url.PathEscape(in.Project), url.PathEscape(in.Pipeline), url.PathEscape(in.RecordID))
}

// recordSCM reads the record and opens its project's SCM; the record's pipeline
// has a main code source.
func (a *Activities) recordSCM(ctx context.Context, in RecordInput) (*model.Record, scm.Provider, scm.Config, error) {
	if a.SCM == nil {
		return nil, nil, scm.Config{}, temporal.NewNonRetryableApplicationError("this worker has no SCM access", ErrTypeSCM, nil)
	}
	if in.Build.Stages.CodeCheckout.Main() == nil {
		return nil, nil, scm.Config{}, temporal.NewNonRetryableApplicationError("the pipeline has no main code source", ErrTypeSCM, nil)
	}
	rec, err := a.Store.GetRecordByID(ctx, in.RecordID)
	if err != nil {
		return nil, nil, scm.Config{}, fmt.Errorf("read the record: %w", err)
	}
	creds, err := a.Store.ProjectCredentials(ctx, in.ProjectID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, scm.Config{}, temporal.NewNonRetryableApplicationError("the project was deleted", ErrTypeSCM, nil)
	}
	if err != nil {
		return nil, nil, scm.Config{}, fmt.Errorf("read the project's credentials: %w", err)
	}
	cfg := creds.SCM()
	prov, err := a.SCM(cfg)
	if err != nil {
		return nil, nil, scm.Config{}, scmActivityError("open the SCM", err)
	}
	return rec, prov, cfg, nil
}

func checkedOutCommit(rec *model.Record) string {
	if ss := rec.StageStatus; ss != nil && ss.CodeCheckout != nil && ss.CodeCheckout.Commits != nil && ss.CodeCheckout.Commits.MainRepo != nil {
		return ss.CodeCheckout.Commits.MainRepo.ID
	}
	return ""
}

// RepoName is the SCM's name of the repository at repoURL: "owner/name" (GitHub),
// "group/sub/name" (GitLab), the path below the server URL (Subversion).
func RepoName(cfg scm.Config, repoURL string) (string, error) {
	u, err := url.Parse(repoURL)
	if err != nil || (u.Path == "" && cfg.Type != model.SCMSVN) {
		return "", fmt.Errorf("%q is not a repository URL", repoURL)
	}
	path := strings.Trim(u.Path, "/")
	if cfg.Type == model.SCMSVN {
		base, err := url.Parse(cfg.Server)
		if err != nil {
			return "", fmt.Errorf("%q is not a server URL", cfg.Server)
		}
		basePath := strings.Trim(base.Path, "/")
		rest, ok := strings.CutPrefix(path, basePath)
		// The server's path ends at a segment: svn://h/repo2 is not under svn://h/repo.
		ok = ok && (basePath == "" || rest == "" || strings.HasPrefix(rest, "/"))
		if !ok || !strings.EqualFold(u.Host, base.Host) || !strings.EqualFold(u.Scheme, base.Scheme) {
			return "", fmt.Errorf("%s is not on the project's SCM server %s", repoURL, cfg.Server)
		}
		return strings.Trim(rest, "/"), nil
	}
	return strings.TrimSuffix(path, ".git"), nil
}

// scmActivityError keeps a refusal (credentials, permission, unknown repository)
// final and lets an unreachable SCM be retried.
func scmActivityError(what string, err error) error {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err
	}
	if errors.Is(err, scm.ErrUnreachable) || errors.Is(err, scm.ErrRateLimited) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return temporal.NewNonRetryableApplicationError(what+": "+err.Error(), ErrTypeSCM, nil)
}
