// Package webhook turns SCM deliveries (GitHub and GitLab webhooks, Subversion
// post-commit hooks) into one Event, checks that a delivery is authentic, and decides
// whether an Event starts a pipeline's record under its autoTrigger.scmTrigger.
//
// Parsers never panic on any input (fuzzed: FuzzGitHub, FuzzGitLab, FuzzSVN). They
// return an Event, an *Ignored (a well-formed delivery that never starts anything,
// e.g. a closed pull request or a deleted branch) or a *MalformedError (a body that
// is not the documented payload). The API answers 2xx for the first two and 4xx for
// the third, so an SCM neither retries an ignored event nor gets a 5xx for bad input.
//
// Authenticity: GitHub deliveries must carry X-Hub-Signature-256 (HMAC-SHA256 of the
// body with the pipeline's webhook secret); a delivery signed with SHA-1 only is
// refused. GitLab deliveries must carry the secret in X-Gitlab-Token. Subversion hook
// URLs carry a token derived from the repository UUID (SVNToken). Every comparison is
// constant time.
package webhook
