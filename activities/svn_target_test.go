package activities

import (
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
)

// The Subversion refs a record may carry and what svn checks out for each: HEAD is
// the source's URL and path at the latest revision (a cron record's ref), never a
// directory named HEAD below it.
func TestSVNTarget(t *testing.T) {
	src := &model.CodeSource{Type: model.SCMSVN, OtherCodeSource: &model.OtherCodeSource{URL: "svn://host/repo/", Path: "/proj/trunk"}}
	for _, tc := range []struct {
		ref, target, rev string
	}{
		{"HEAD", "svn://host/repo/proj/trunk", ""},
		{"27", "svn://host/repo/proj/trunk", "27"},
		{"sub", "svn://host/repo/proj/trunk/sub", ""},
		{"sub@27", "svn://host/repo/proj/trunk/sub", "27"},
		{"sub@HEAD", "svn://host/repo/proj/trunk/sub", ""},
		{"sub/HEAD", "svn://host/repo/proj/trunk/sub/HEAD", ""},
	} {
		if err := model.ValidateRef("ref", tc.ref); err != nil {
			t.Fatalf("ref %q is refused before the checkout: %v", tc.ref, err)
		}
		target, rev, err := svnTarget(src, tc.ref)
		if err != nil || target != tc.target || rev != tc.rev {
			t.Errorf("svnTarget(%q) = %q, %q, %v; want %q, %q", tc.ref, target, rev, err, tc.target, tc.rev)
		}
	}
	if _, _, err := svnTarget(src, "sub@tip"); err == nil {
		t.Error("a revision that is neither a number nor HEAD was accepted")
	}
}
