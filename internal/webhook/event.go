package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Kind is what happened on the SCM; the names are the scmTrigger keys they match.
type Kind string

// Kinds of events.
const (
	KindPush               Kind = "push"
	KindTagRelease         Kind = "tagRelease"
	KindPullRequest        Kind = "pullRequest"
	KindPullRequestComment Kind = "pullRequestComment"
	KindPostCommit         Kind = "postCommit"
)

// Event is one SCM delivery, whichever SCM sent it.
type Event struct {
	Kind Kind
	// Repo names the repository: GitHub's full_name, GitLab's path_with_namespace,
	// Subversion's repository UUID.
	Repo string
	// RepoURLs are the repository's URLs the payload names (web, clone, ssh), to
	// compare with a pipeline's code source (SameRepo).
	RepoURLs []string
	// Ref is what a record checks out: refs/heads/<branch>, refs/tags/<tag>,
	// refs/pull/<n>/head (GitHub), refs/merge-requests/<n>/head (GitLab) or, for
	// Subversion, the revision number.
	Ref string
	// SHA is the commit (the revision number for Subversion); "" when the payload
	// does not say (a GitHub release or comment).
	SHA      string
	Branch   string // pushed branch, or a pull request's source branch
	Tag      string
	Comment  string // the comment's text, for KindPullRequestComment
	PRNumber int
	// ChangedPaths are the paths a Subversion revision changed, relative to the
	// repository root, without a leading slash (directories end with '/').
	ChangedPaths []string
	// DeliveryID is the SCM's ID of this delivery (X-GitHub-Delivery,
	// X-Gitlab-Event-UUID); "" when it sent none.
	DeliveryID string
}

// DedupeKey names the event so that a redelivery, or another delivery of the same
// change, has the same key: a tag is built once whichever of GitHub's push, create and
// release events for it arrives first; otherwise the delivery ID, or what the change
// is (repository, ref, commit) when the SCM sent no delivery ID.
func (e *Event) DedupeKey() string {
	switch {
	case e.Kind == KindTagRelease:
		return fmt.Sprintf("tag\x00%s\x00%s", e.Repo, e.Tag)
	case e.Kind == KindPostCommit:
		return fmt.Sprintf("svn\x00%s\x00%s", e.Repo, e.SHA)
	case e.DeliveryID != "":
		return "delivery\x00" + e.DeliveryID
	}
	return fmt.Sprintf("change\x00%s\x00%s\x00%s\x00%s\x00%s", e.Kind, e.Repo, e.Ref, e.SHA, e.Comment)
}

// RecordID is the ID of the record (and workflow) an event starts for a pipeline:
// derived from the event's DedupeKey, so a redelivery finds the record it started.
func RecordID(pipelineID string, e *Event) string {
	sum := sha256.Sum256([]byte(pipelineID + "\x00" + e.DedupeKey()))
	return "wh-" + hex.EncodeToString(sum[:])[:20]
}

// Ignored is a well-formed delivery that starts nothing, with why.
type Ignored struct{ Reason string }

func (e *Ignored) Error() string { return "ignored: " + e.Reason }

func ignored(format string, args ...any) *Ignored {
	return &Ignored{Reason: clip(fmt.Sprintf(format, args...))}
}

// clip bounds a message quoting payload text, which may be megabytes long.
func clip(s string) string {
	const max = 300
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}

// MalformedError is a body that is not the documented payload.
type MalformedError struct {
	Field string // the JSON field or query parameter at fault, if known
	Msg   string
}

func (e *MalformedError) Error() string {
	if e.Field == "" {
		return "malformed payload: " + e.Msg
	}
	return "malformed payload: " + e.Field + ": " + e.Msg
}

func malformed(field, format string, args ...any) *MalformedError {
	return &MalformedError{Field: clip(field), Msg: clip(fmt.Sprintf(format, args...))}
}
