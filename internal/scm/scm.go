// Package scm is the contract between Cyclone and the source-code managers a project
// uses: GitHub (and GitHub Enterprise), GitLab and Subversion. Implementations live in
// sub-packages (github, gitlab, svn); package providers picks one for a project.
//
// # Contract
//
// A Provider is made for one project's SCM configuration (type, server address and
// credentials) and is safe for concurrent use. Every method takes the caller's
// context and gives up when it ends. A repository is named as the SCM names it:
// "owner/name" on GitHub, the full path "group/subgroup/name" on GitLab, the path
// below the server URL on Subversion.
//
// Errors are classified with the sentinel errors below (test with errors.Is) so the
// API can answer with the right status without knowing which SCM it talks to:
// refused credentials are ErrUnauthorized, an unknown repository ErrNotFound, a server
// that cannot be reached (or answers 5xx) ErrUnreachable. Error messages never contain
// a credential.
//
// Before any request, the server URL passes CheckURL, and every connection passes
// the same check on the address it actually resolved to (see HTTPClient), so a DNS
// name cannot point a request at a link-local or cloud-metadata address.
package scm

import (
	"context"
	"errors"
	"strings"
)

// Errors a Provider's methods wrap.
var (
	// ErrUnauthorized: the SCM refused the credentials.
	ErrUnauthorized = errors.New("the SCM refused the credentials")
	// ErrForbidden: the credentials are valid but lack a permission the call needs
	// (e.g. admin rights to register a webhook).
	ErrForbidden = errors.New("the credentials lack the permission")
	// ErrNotFound: the repository (or ref) does not exist or is not visible.
	ErrNotFound = errors.New("not found on the SCM")
	// ErrUnreachable: the server could not be reached or failed (5xx, timeout).
	ErrUnreachable = errors.New("the SCM server could not be reached")
	// ErrRateLimited: the SCM's rate limit is exhausted; retry later.
	ErrRateLimited = errors.New("the SCM's rate limit is exhausted")
	// ErrBadURL: the server URL is not allowed (scheme, link-local or metadata address).
	ErrBadURL = errors.New("the SCM server URL is not allowed")
	// ErrUnsupported: the SCM has no such feature (e.g. webhooks on Subversion).
	ErrUnsupported = errors.New("not supported by this SCM")
)

// Credentials authenticate to an SCM server. Either Token, or Username and
// Password; GitHub wants Username with a Token too.
type Credentials struct {
	Username string
	Password string
	Token    string
}

// Config is a project's SCM: model.SCMGithub, model.SCMGitlab or model.SCMSVN, the
// server's base URL (e.g. https://github.com, https://ghe.example.com,
// https://gitlab.example.com, https://svn.example.com/repos) and the credentials.
type Config struct {
	Type   string
	Server string
	Credentials
}

// Repository is one repository the credentials can see (the spec's RepoObject).
type Repository struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// Commit states reported with SetCommitStatus.
const (
	StatePending = "pending"
	StateSuccess = "success"
	StateFailure = "failure"
	StateError   = "error"
)

// CommitStatus is the state of a record, shown next to the commit on the SCM.
type CommitStatus struct {
	State       string // one of the State* constants
	TargetURL   string // link back to the record
	Description string
	Context     string // e.g. "cyclone/<pipeline>"
}

// Webhook events a pipeline can register for.
const (
	EventPush               = "push"
	EventTagRelease         = "tagRelease"
	EventPullRequest        = "pullRequest"
	EventPullRequestComment = "pullRequestComment"
)

// Webhook is what a pipeline registers on its repository.
type Webhook struct {
	URL    string   // where the SCM posts events (Cyclone's public URL)
	Secret string   // GitHub: HMAC key; GitLab: the X-Gitlab-Token value
	Events []string // Event* constants
}

// Provider talks to one project's SCM.
type Provider interface {
	// Verify checks the credentials. When they are a username and password and the
	// SCM exchanges them for a token, it returns the token, to be stored instead of
	// the password; otherwise it returns "".
	Verify(ctx context.Context) (token string, err error)
	// Repos lists every repository the credentials can see, walking all pages.
	Repos(ctx context.Context) ([]Repository, error)
	// Branches and Tags list a repository's branch and tag names, all pages.
	Branches(ctx context.Context, repo string) ([]string, error)
	Tags(ctx context.Context, repo string) ([]string, error)
	// TemplateType detects the build tool from files at the repository's root:
	// "Maven", "Gradle", "Go", "NodeJS", "Python" or "PHP"; "" when none matches.
	TemplateType(ctx context.Context, repo string) (string, error)
	// CreateTag tags a commit (Subversion: copies the revision to tags/<name>).
	CreateTag(ctx context.Context, repo, name, commit string) error
	// SetCommitStatus reports a record's state on a commit.
	SetCommitStatus(ctx context.Context, repo, commit string, s CommitStatus) error
	// CreateWebhook registers a webhook and returns its ID on the SCM.
	CreateWebhook(ctx context.Context, repo string, h Webhook) (id string, err error)
	// DeleteWebhook removes a webhook; one already gone is not an error.
	DeleteWebhook(ctx context.Context, repo, id string) error
}

// TemplateTypes maps a file at a repository's root to the build tool it reveals,
// in the order they are tried.
var TemplateTypes = []struct{ File, Type string }{
	{"pom.xml", "Maven"},
	{"build.gradle", "Gradle"},
	{"build.gradle.kts", "Gradle"},
	{"go.mod", "Go"},
	{"package.json", "NodeJS"},
	{"requirements.txt", "Python"},
	{"setup.py", "Python"},
	{"pyproject.toml", "Python"},
	{"composer.json", "PHP"},
}

// DetectTemplateType returns the build tool a repository's root files reveal, or "".
func DetectTemplateType(rootFiles []string) string {
	have := make(map[string]bool, len(rootFiles))
	for _, f := range rootFiles {
		have[f] = true
	}
	for _, t := range TemplateTypes {
		if have[t.File] {
			return t.Type
		}
	}
	return ""
}

// GitAuth returns the HTTP basic-auth user and password git uses to clone from the
// SCM with these credentials ("", "" when there are none).
func GitAuth(cfg Config) (user, password string) {
	switch {
	case cfg.Token != "" && cfg.Type == "Gitlab":
		return "oauth2", cfg.Token
	case cfg.Token != "":
		user = cfg.Username
		if user == "" {
			user = "x-access-token"
		}
		return user, cfg.Token
	case cfg.Password != "":
		return cfg.Username, cfg.Password
	}
	return "", ""
}

// Redact replaces every occurrence of the non-empty secrets in s with "***", for
// messages that may quote what a server or a program said.
func Redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	return s
}
