package webhook

import (
	"net/url"
	"path"
	"strings"

	"github.com/cycloneci/cyclone/internal/model"
)

// Decision is what an event does to a pipeline: run Stages (nil: every configured
// stage), or nothing, with Reason saying why.
type Decision struct {
	Run    bool
	Stages []string
	Reason string
}

func skip(format string, args ...any) Decision {
	return Decision{Reason: ignored(format, args...).Reason}
}

// Match decides whether ev triggers a pipeline with scmTrigger t. svnPath is the path
// of the pipeline's main code source inside its Subversion repository ("" = the
// whole repository); only postCommit events use it.
func Match(t *model.SCMTrigger, ev *Event, svnPath string) Decision {
	if t == nil {
		return skip("the pipeline has no scmTrigger")
	}
	switch ev.Kind {
	case KindPush:
		if t.Push == nil {
			return skip("the pipeline has no push trigger")
		}
		if !BranchMatches(t.Push.Branches, ev.Branch) {
			return skip("branch %q matches none of the push trigger's branches %q", ev.Branch, t.Push.Branches)
		}
		return Decision{Run: true, Stages: t.Push.Stages}
	case KindTagRelease:
		if t.TagRelease == nil {
			return skip("the pipeline has no tagRelease trigger")
		}
		return Decision{Run: true, Stages: t.TagRelease.Stages}
	case KindPullRequest:
		if t.PullRequest == nil {
			return skip("the pipeline has no pullRequest trigger")
		}
		return Decision{Run: true, Stages: t.PullRequest.Stages}
	case KindPullRequestComment:
		c := t.PullRequestComment
		if c == nil {
			return skip("the pipeline has no pullRequestComment trigger")
		}
		if !CommentMatches(c.Comments, ev.Comment) {
			return skip("the comment matches none of the pullRequestComment trigger's comments")
		}
		return Decision{Run: true, Stages: c.Stages}
	case KindPostCommit:
		if t.PostCommit == nil {
			return skip("the pipeline has no postCommit trigger")
		}
		if !PathsUnder(ev.ChangedPaths, svnPath) {
			return skip("revision %s changed nothing under %q", ev.SHA, svnPath)
		}
		return Decision{Run: true, Stages: t.PostCommit.Stages}
	}
	return skip("event kind %q does not trigger pipelines", ev.Kind)
}

// BranchMatches reports whether branch matches one of the patterns: path.Match globs
// ("release/*", "feature-?"), with or without a refs/heads/ prefix. No pattern
// matches every branch.
func BranchMatches(patterns []string, branch string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		p = strings.TrimPrefix(strings.TrimSpace(p), "refs/heads/")
		if p == branch {
			return true
		}
		if ok, err := path.Match(p, branch); err == nil && ok {
			return true
		}
	}
	return false
}

// CheckBranchPattern reports whether p is a usable branch pattern.
func CheckBranchPattern(p string) bool {
	p = strings.TrimSpace(p)
	_, err := path.Match(strings.TrimPrefix(p, "refs/heads/"), "")
	return p != "" && err == nil
}

// CommentMatches reports whether a comment, trimmed of surrounding space, matches
// one of the patterns: exactly, or as a glob where '*' is any text (new lines too)
// and '?' any one character. Patterns are never regular expressions.
func CommentMatches(patterns []string, comment string) bool {
	comment = strings.TrimSpace(comment)
	for _, p := range patterns {
		p = strings.TrimSpace(p)
		if p != "" && (p == comment || glob(p, comment)) {
			return true
		}
	}
	return false
}

// glob matches s against p where '*' is any run of runes and '?' one rune. It runs in
// O(len(p)*len(s)) at worst: the classic backtrack to the last star.
func glob(p, s string) bool {
	pr, sr := []rune(p), []rune(s)
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(sr) {
		switch {
		case pi < len(pr) && (pr[pi] == '?' || pr[pi] == sr[si]):
			pi++
			si++
		case pi < len(pr) && pr[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pr) && pr[pi] == '*' {
		pi++
	}
	return pi == len(pr)
}

// PathsUnder reports whether one of the changed paths is dir or below it; dir ""
// (or "/") is the whole repository.
func PathsUnder(changed []string, dir string) bool {
	dir = strings.Trim(dir, "/")
	for _, c := range changed {
		c = strings.Trim(c, "/")
		if dir == "" || c == dir || strings.HasPrefix(c, dir+"/") {
			return true
		}
	}
	return false
}

// SameRepo reports whether the repository URL a pipeline checks out is one the
// event's payload names. Host and path are compared without case, scheme, user, a
// ".git" suffix or a trailing slash; git's scp-like user@host:path counts as host/path.
func SameRepo(repoURL string, ev *Event) bool {
	want := canonicalRepo(repoURL)
	if want == "" {
		return false
	}
	for _, u := range ev.RepoURLs {
		if canonicalRepo(u) == want {
			return true
		}
	}
	return false
}

// RepoPath is the repository's path on its server ("owner/name", "group/sub/name")
// from its URL, "" when the URL has none.
func RepoPath(repoURL string) string {
	_, p, _ := strings.Cut(hostPath(repoURL), "/")
	return p
}

func canonicalRepo(raw string) string { return strings.ToLower(hostPath(raw)) }

// hostPath is host/path of a repository URL, without scheme, user, port, ".git" or
// slashes around the path; "" when raw is no repository URL.
func hostPath(raw string) string {
	raw = strings.TrimSpace(raw)
	var host, p string
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		host, p = u.Hostname(), u.Path
	} else if at, rest, ok := strings.Cut(raw, "@"); ok && !strings.Contains(at, "/") {
		host, p, _ = strings.Cut(rest, ":")
	} else {
		return ""
	}
	p = strings.TrimSuffix(strings.Trim(p, "/"), ".git")
	if host == "" || p == "" {
		return ""
	}
	return host + "/" + p
}
