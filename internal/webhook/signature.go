package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strings"
)

// Why a delivery is not authentic.
var (
	ErrNoSecret         = errors.New("the pipeline has no webhook secret")
	ErrMissingSignature = errors.New("X-Hub-Signature-256 is missing")
	ErrSHA1Only         = errors.New("the delivery is signed with SHA-1 only (X-Hub-Signature); configure the webhook to send X-Hub-Signature-256")
	ErrBadSignature     = errors.New("X-Hub-Signature-256 does not match the body")
	ErrMissingToken     = errors.New("X-Gitlab-Token is missing")
	ErrBadToken         = errors.New("X-Gitlab-Token does not match the pipeline's webhook secret")
	ErrBadSVNToken      = errors.New("the hook URL's token is missing or wrong")
)

// SignGitHub is the X-Hub-Signature-256 value GitHub sends for body.
func SignGitHub(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifyGitHub checks a GitHub delivery's X-Hub-Signature-256 (sig256) against the
// body; sha1 is its X-Hub-Signature header, only to say why a delivery is refused.
func VerifyGitHub(secret, sig256, sha1 string, body []byte) error {
	switch {
	case secret == "":
		return ErrNoSecret
	case sig256 == "" && sha1 != "":
		return ErrSHA1Only
	case sig256 == "":
		return ErrMissingSignature
	}
	got, ok := strings.CutPrefix(sig256, "sha256=")
	if !ok {
		return ErrBadSignature
	}
	gotMAC, err := hex.DecodeString(got)
	if err != nil {
		return ErrBadSignature
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	if !hmac.Equal(gotMAC, mac.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}

// VerifyGitLab checks a GitLab delivery's X-Gitlab-Token.
func VerifyGitLab(secret, token string) error {
	switch {
	case secret == "":
		return ErrNoSecret
	case token == "":
		return ErrMissingToken
	case subtle.ConstantTimeCompare([]byte(secret), []byte(token)) != 1:
		return ErrBadToken
	}
	return nil
}

// SVNToken is the token of a Subversion repository's hook URL: an HMAC of the
// repository UUID with the server's webhook key, so it needs no storage and cannot be
// made without the key.
func SVNToken(key []byte, repoID string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("cyclone svn post-commit\x00" + strings.ToLower(repoID)))
	return hex.EncodeToString(mac.Sum(nil))[:40]
}

// VerifySVN checks a hook URL's token.
func VerifySVN(key []byte, repoID, token string) error {
	if len(key) == 0 || token == "" {
		return ErrBadSVNToken
	}
	want := SVNToken(key, repoID)
	if subtle.ConstantTimeCompare([]byte(want), []byte(token)) != 1 {
		return ErrBadSVNToken
	}
	return nil
}
