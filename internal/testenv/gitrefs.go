package testenv

import (
	"path/filepath"
	"strings"
)

// RevParse returns the commit ID rev ("master~1", "v1^{commit}", ...) names in the
// named repository.
func (g *GitServer) RevParse(name, rev string) string {
	g.t.Helper()
	return strings.TrimSpace(g.git("", "--git-dir", filepath.Join(g.root, name+".git"), "rev-parse", "--verify", "--end-of-options", rev+"^{commit}"))
}

// Tag creates the annotated tag tag on rev in the named repository.
func (g *GitServer) Tag(name, tag, rev string) {
	g.t.Helper()
	g.git("", "--git-dir", filepath.Join(g.root, name+".git"), "tag", "-a", "-m", "tag "+tag, "--", tag, rev)
}
