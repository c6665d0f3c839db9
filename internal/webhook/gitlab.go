package webhook

import (
	"strconv"
)

// GitLab event names (the X-Gitlab-Event header).
const (
	GitLabPush         = "Push Hook"
	GitLabTagPush      = "Tag Push Hook"
	GitLabMergeRequest = "Merge Request Hook"
	GitLabNote         = "Note Hook"
)

type glProject struct {
	PathWithNamespace string `json:"path_with_namespace"`
	WebURL            string `json:"web_url"`
	GitHTTPURL        string `json:"git_http_url"`
	GitSSHURL         string `json:"git_ssh_url"`
	HTTPURL           string `json:"http_url"`
	SSHURL            string `json:"ssh_url"`
}

type glCommit struct {
	ID string `json:"id"`
}

type glMergeRequest struct {
	IID          int       `json:"iid"`
	State        string    `json:"state"`
	Action       string    `json:"action"`
	OldRev       string    `json:"oldrev"`
	SourceBranch string    `json:"source_branch"`
	LastCommit   *glCommit `json:"last_commit"`
	// The projects the merge request comes from and goes to: different for a fork.
	SourceProjectID int `json:"source_project_id"`
	TargetProjectID int `json:"target_project_id"`
}

type glPayload struct {
	ObjectKind  string     `json:"object_kind"`
	Ref         string     `json:"ref"`
	After       string     `json:"after"`
	CheckoutSHA *string    `json:"checkout_sha"`
	Project     *glProject `json:"project"`
	// Merge Request Hook: the merge request; Note Hook: the note.
	ObjectAttributes *struct {
		glMergeRequest
		Note         string `json:"note"`
		NoteableType string `json:"noteable_type"`
	} `json:"object_attributes"`
	// Note Hook on a merge request.
	MergeRequest *glMergeRequest `json:"merge_request"`
}

// ParseGitLab parses a GitLab delivery: event is the X-Gitlab-Event header (the body's
// object_kind decides when it is missing), uuid the X-Gitlab-Event-UUID header.
func ParseGitLab(event, uuid string, body []byte) (*Event, error) {
	var p glPayload
	if err := decode(body, &p); err != nil {
		return nil, err
	}
	want := map[string]string{GitLabPush: "push", GitLabTagPush: "tag_push", GitLabMergeRequest: "merge_request", GitLabNote: "note"}
	if event != "" {
		kind, ok := want[event]
		if !ok {
			return nil, ignored("GitLab event %q does not trigger pipelines", event)
		}
		if p.ObjectKind != kind {
			return nil, malformed("object_kind", "%q does not match the %s header", p.ObjectKind, event)
		}
	}
	if p.Project == nil || p.Project.PathWithNamespace == "" {
		return nil, malformed("project.path_with_namespace", "is required")
	}
	pr := p.Project
	ev := &Event{Repo: pr.PathWithNamespace, RepoURLs: nonEmpty(pr.WebURL, pr.GitHTTPURL, pr.GitSSHURL, pr.HTTPURL, pr.SSHURL), DeliveryID: uuid}
	switch p.ObjectKind {
	case "push", "tag_push":
		sha := p.After
		if p.CheckoutSHA != nil {
			sha = *p.CheckoutSHA
		}
		if isZeroSHA(p.After) || sha == "" {
			return nil, ignored("%s was deleted", p.Ref)
		}
		if err := checkSHA("checkout_sha", sha); err != nil {
			return nil, err
		}
		ev.SHA = sha
		if err := refEvent(ev, "ref", p.Ref); err != nil {
			return nil, err
		}
		if (p.ObjectKind == "tag_push") != (ev.Kind == KindTagRelease) {
			return nil, malformed("ref", "%q does not fit object_kind %s", p.Ref, p.ObjectKind)
		}
		return ev, nil
	case "merge_request":
		mr := p.ObjectAttributes
		if mr == nil {
			return nil, malformed("object_attributes", "is required")
		}
		switch {
		case mr.Action == "open" || mr.Action == "reopen":
		case mr.Action == "update" && mr.OldRev != "":
		case mr.Action == "update":
			return nil, ignored("a merge request update without new commits")
		default:
			return nil, ignored("merge request action %q does not trigger pipelines", mr.Action)
		}
		if err := notFromFork(&mr.glMergeRequest, "merge request"); err != nil {
			return nil, err
		}
		return mergeRequestEvent(ev, KindPullRequest, &mr.glMergeRequest, "object_attributes")
	case "note":
		n := p.ObjectAttributes
		switch {
		case n == nil:
			return nil, malformed("object_attributes", "is required")
		case n.NoteableType != "MergeRequest":
			return nil, ignored("a comment on a %s, not on a merge request", orWord(n.NoteableType, "commit"))
		case n.Action != "" && n.Action != "create":
			return nil, ignored("comment action %q does not trigger pipelines", n.Action)
		case p.MergeRequest == nil:
			return nil, malformed("merge_request", "is required on a merge request comment")
		case p.MergeRequest.State != "opened":
			return nil, ignored("a comment on a %s merge request", orWord(p.MergeRequest.State, "closed"))
		}
		// GitLab does not say what the comment's author may do in the project: a
		// comment may run only code that is in the project already.
		if err := notFromFork(p.MergeRequest, "comment on a merge request"); err != nil {
			return nil, err
		}
		ev.Comment = n.Note
		return mergeRequestEvent(ev, KindPullRequestComment, p.MergeRequest, "merge_request")
	case "":
		return nil, malformed("object_kind", "is required")
	}
	return nil, ignored("GitLab event %q does not trigger pipelines", p.ObjectKind)
}

// notFromFork ignores a merge request (or a comment on one) from a fork: it would run
// code from outside the project with the pipeline's secrets.
func notFromFork(mr *glMergeRequest, what string) error {
	if mr.SourceProjectID != 0 && mr.TargetProjectID != 0 && mr.SourceProjectID != mr.TargetProjectID {
		return ignored("a %s from a fork (project %d) does not trigger: it would run code from outside the project with the pipeline's secrets", what, mr.SourceProjectID)
	}
	return nil
}

func mergeRequestEvent(ev *Event, kind Kind, mr *glMergeRequest, field string) (*Event, error) {
	if mr.IID <= 0 {
		return nil, malformed(field+".iid", "must be a positive merge request number")
	}
	if mr.LastCommit != nil && mr.LastCommit.ID != "" {
		if err := checkSHA(field+".last_commit.id", mr.LastCommit.ID); err != nil {
			return nil, err
		}
		ev.SHA = mr.LastCommit.ID
	}
	if kind == KindPullRequest && ev.SHA == "" {
		return nil, malformed(field+".last_commit.id", "is required")
	}
	ev.Kind, ev.PRNumber, ev.Branch = kind, mr.IID, mr.SourceBranch
	ev.Ref = "refs/merge-requests/" + strconv.Itoa(mr.IID) + "/head"
	return ev, nil
}
