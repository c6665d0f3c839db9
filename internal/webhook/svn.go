package webhook

import (
	"bufio"
	"bytes"
	"regexp"
	"strconv"
	"strings"
)

// svnUUIDRe is the shape of a repository UUID as `svnlook uuid` prints it.
var svnUUIDRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ValidSVNRepoID reports whether s looks like a Subversion repository UUID.
func ValidSVNRepoID(s string) bool { return svnUUIDRe.MatchString(s) }

// ParseSVN parses a post-commit hook call: repoID is the repository UUID from the
// URL, revision the query's revision, body the output of
// `svnlook changed --revision $REV $REPOS`: one "<status> <path>" line per change, the
// status in the first columns and the path from the fifth.
func ParseSVN(repoID, revision string, body []byte) (*Event, error) {
	if !ValidSVNRepoID(repoID) {
		return nil, malformed("svnrepoid", "%q is not a repository UUID", repoID)
	}
	rev, err := strconv.ParseInt(revision, 10, 64)
	if err != nil || rev <= 0 {
		return nil, malformed("revision", "%q is not a positive revision number", revision)
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64*1024), len(body)+1)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		p, ok := svnChangedPath(line)
		if !ok {
			return nil, malformed("body", "%q is not a line of `svnlook changed`", line)
		}
		paths = append(paths, p)
	}
	if err := sc.Err(); err != nil {
		return nil, malformed("body", "%v", err)
	}
	if len(paths) == 0 {
		return nil, ignored("revision %d changed no path", rev)
	}
	r := strconv.FormatInt(rev, 10)
	return &Event{Kind: KindPostCommit, Repo: strings.ToLower(repoID), Ref: r, SHA: r, ChangedPaths: paths}, nil
}

// svnChangedPath reads one line of `svnlook changed`: up to three status columns
// (A, D, U, _, space, + for copy history), a space, then the path.
func svnChangedPath(line string) (string, bool) {
	if len(line) < 5 || line[3] != ' ' {
		return "", false
	}
	for _, c := range line[:3] {
		if !strings.ContainsRune("ADU_R+ ", c) {
			return "", false
		}
	}
	if line[0] == ' ' && line[1] == ' ' {
		return "", false
	}
	p := strings.TrimLeft(line[4:], "/")
	if strings.TrimSpace(p) == "" {
		return "", false
	}
	return p, true
}
