package webhook

import (
	"encoding/json"
	"strconv"
	"strings"
)

// GitHub event names (the X-GitHub-Event header) this package understands.
const (
	GitHubPing         = "ping"
	GitHubPush         = "push"
	GitHubCreate       = "create"
	GitHubRelease      = "release"
	GitHubPullRequest  = "pull_request"
	GitHubIssueComment = "issue_comment"
)

type ghRepo struct {
	FullName string `json:"full_name"`
	HTMLURL  string `json:"html_url"`
	CloneURL string `json:"clone_url"`
	SSHURL   string `json:"ssh_url"`
	GitURL   string `json:"git_url"`
}

func (r *ghRepo) urls() []string {
	return nonEmpty(r.HTMLURL, r.CloneURL, r.SSHURL, r.GitURL)
}

type ghPush struct {
	Ref        string  `json:"ref"`
	After      string  `json:"after"`
	Deleted    bool    `json:"deleted"`
	Repository *ghRepo `json:"repository"`
}

type ghCreate struct {
	Ref        string  `json:"ref"`
	RefType    string  `json:"ref_type"`
	Repository *ghRepo `json:"repository"`
}

type ghRelease struct {
	Action  string `json:"action"`
	Release *struct {
		TagName string `json:"tag_name"`
		Draft   bool   `json:"draft"`
	} `json:"release"`
	Repository *ghRepo `json:"repository"`
}

type ghPullRequest struct {
	Action      string `json:"action"`
	Number      int    `json:"number"`
	PullRequest *struct {
		State string `json:"state"`
		Head  struct {
			Ref  string `json:"ref"`
			SHA  string `json:"sha"`
			Repo *struct {
				FullName string `json:"full_name"`
			} `json:"repo"`
		} `json:"head"`
	} `json:"pull_request"`
	Repository *ghRepo `json:"repository"`
}

type ghIssueComment struct {
	Action string `json:"action"`
	Issue  *struct {
		Number      int             `json:"number"`
		State       string          `json:"state"`
		PullRequest json.RawMessage `json:"pull_request"`
	} `json:"issue"`
	Comment *struct {
		Body              string `json:"body"`
		AuthorAssociation string `json:"author_association"`
	} `json:"comment"`
	Repository *ghRepo `json:"repository"`
}

// ParseGitHub parses a GitHub delivery: event is the X-GitHub-Event header, delivery
// the X-GitHub-Delivery header. A ping is an *Ignored (the caller answers it first).
func ParseGitHub(event, delivery string, body []byte) (*Event, error) {
	var (
		ev  *Event
		err error
	)
	switch event {
	case GitHubPing:
		return nil, ignored("ping")
	case GitHubPush:
		ev, err = githubPush(body)
	case GitHubCreate:
		ev, err = githubCreate(body)
	case GitHubRelease:
		ev, err = githubRelease(body)
	case GitHubPullRequest:
		ev, err = githubPullRequest(body)
	case GitHubIssueComment:
		ev, err = githubIssueComment(body)
	case "":
		return nil, malformed("X-GitHub-Event", "header is missing")
	default:
		return nil, ignored("GitHub event %q does not trigger pipelines", event)
	}
	if err != nil {
		return nil, err
	}
	ev.DeliveryID = delivery
	return ev, nil
}

func decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if asTypeErr(err, &typeErr) && typeErr.Field != "" {
			return malformed(typeErr.Field, "must be a JSON %s", typeErr.Type.Kind())
		}
		return malformed("", "not JSON: %v", err)
	}
	return nil
}

func githubRepo(r *ghRepo) (string, []string, error) {
	if r == nil || r.FullName == "" {
		return "", nil, malformed("repository.full_name", "is required")
	}
	return r.FullName, r.urls(), nil
}

func githubPush(body []byte) (*Event, error) {
	var p ghPush
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, urls, err := githubRepo(p.Repository)
	if err != nil {
		return nil, err
	}
	if p.Deleted || isZeroSHA(p.After) {
		return nil, ignored("%s was deleted", p.Ref)
	}
	if err := checkSHA("after", p.After); err != nil {
		return nil, err
	}
	ev := &Event{Repo: repo, RepoURLs: urls, SHA: p.After}
	if err := refEvent(ev, "ref", p.Ref); err != nil {
		return nil, err
	}
	return ev, nil
}

// refEvent fills Kind, Ref, Branch or Tag from a pushed full ref.
func refEvent(ev *Event, field, ref string) error {
	switch {
	case strings.HasPrefix(ref, "refs/heads/"):
		ev.Kind, ev.Branch = KindPush, strings.TrimPrefix(ref, "refs/heads/")
	case strings.HasPrefix(ref, "refs/tags/"):
		ev.Kind, ev.Tag = KindTagRelease, strings.TrimPrefix(ref, "refs/tags/")
	default:
		return malformed(field, "%q is neither refs/heads/... nor refs/tags/...", ref)
	}
	if err := checkRef(field, ref); err != nil {
		return err
	}
	ev.Ref = ref
	return nil
}

func githubCreate(body []byte) (*Event, error) {
	var p ghCreate
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, urls, err := githubRepo(p.Repository)
	if err != nil {
		return nil, err
	}
	if p.RefType != "tag" {
		return nil, ignored("a created %s is built by its push event", orWord(p.RefType, "ref"))
	}
	ref := "refs/tags/" + p.Ref
	if err := checkRef("ref", ref); err != nil || p.Ref == "" {
		return nil, malformed("ref", "%q is not a tag name", p.Ref)
	}
	return &Event{Kind: KindTagRelease, Repo: repo, RepoURLs: urls, Ref: ref, Tag: p.Ref}, nil
}

func githubRelease(body []byte) (*Event, error) {
	var p ghRelease
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, urls, err := githubRepo(p.Repository)
	if err != nil {
		return nil, err
	}
	if p.Release == nil {
		return nil, malformed("release", "is required")
	}
	switch {
	case p.Action != "published" && p.Action != "created" && p.Action != "released":
		return nil, ignored("release action %q does not trigger pipelines", p.Action)
	case p.Release.Draft:
		return nil, ignored("draft releases do not trigger pipelines")
	}
	ref := "refs/tags/" + p.Release.TagName
	if err := checkRef("release.tag_name", ref); err != nil || p.Release.TagName == "" {
		return nil, malformed("release.tag_name", "%q is not a tag name", p.Release.TagName)
	}
	return &Event{Kind: KindTagRelease, Repo: repo, RepoURLs: urls, Ref: ref, Tag: p.Release.TagName}, nil
}

func githubPullRequest(body []byte) (*Event, error) {
	var p ghPullRequest
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, urls, err := githubRepo(p.Repository)
	if err != nil {
		return nil, err
	}
	if p.PullRequest == nil {
		return nil, malformed("pull_request", "is required")
	}
	switch p.Action {
	case "opened", "synchronize", "reopened":
	default:
		return nil, ignored("pull request action %q does not trigger pipelines", p.Action)
	}
	if p.Number <= 0 {
		return nil, malformed("number", "must be a positive pull request number")
	}
	if head := p.PullRequest.Head.Repo; head != nil && head.FullName != "" && !strings.EqualFold(head.FullName, repo) {
		return nil, ignored("a pull request from the fork %s does not trigger by itself: it would run code from outside the repository with the pipeline's secrets (a member's matching comment can)", head.FullName)
	}
	if err := checkSHA("pull_request.head.sha", p.PullRequest.Head.SHA); err != nil {
		return nil, err
	}
	return &Event{Kind: KindPullRequest, Repo: repo, RepoURLs: urls, PRNumber: p.Number,
		Ref: pullRef(p.Number), SHA: p.PullRequest.Head.SHA, Branch: p.PullRequest.Head.Ref}, nil
}

// trustedCommenter are GitHub's author associations whose comments may trigger.
var trustedCommenter = map[string]bool{"OWNER": true, "MEMBER": true, "COLLABORATOR": true}

func pullRef(n int) string { return "refs/pull/" + strconv.Itoa(n) + "/head" }

func githubIssueComment(body []byte) (*Event, error) {
	var p ghIssueComment
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	repo, urls, err := githubRepo(p.Repository)
	if err != nil {
		return nil, err
	}
	if p.Issue == nil || p.Comment == nil {
		return nil, malformed("issue", "issue and comment are required")
	}
	switch {
	case p.Action != "created":
		return nil, ignored("comment action %q does not trigger pipelines", p.Action)
	case len(p.Issue.PullRequest) == 0 || string(p.Issue.PullRequest) == "null":
		return nil, ignored("a comment on an issue, not on a pull request")
	case p.Issue.State != "open":
		return nil, ignored("a comment on a %s pull request", orWord(p.Issue.State, "closed"))
	case p.Issue.Number <= 0:
		return nil, malformed("issue.number", "must be a positive pull request number")
	case !trustedCommenter[p.Comment.AuthorAssociation]:
		// On a public repository anyone may comment: only the repository's own
		// people may run its pipeline (with its secrets) on a pull request.
		return nil, ignored("the comment's author is not an owner, member or collaborator of the repository (%s)",
			orWord(p.Comment.AuthorAssociation, "unknown"))
	}
	return &Event{Kind: KindPullRequestComment, Repo: repo, RepoURLs: urls, PRNumber: p.Issue.Number,
		Ref: pullRef(p.Issue.Number), Comment: p.Comment.Body}, nil
}
