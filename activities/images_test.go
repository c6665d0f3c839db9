package activities

import "testing"

func TestImageNaming(t *testing.T) {
	tags := []struct{ name, want string }{
		{"v1.0.0", "v1.0.0"},
		{"abc1234-260102030405", "abc1234-260102030405"},
		{"release/2026 01", "release-2026-01"},
		{".hidden", "hidden"},
		{"--x", "x"},
		{"日本", ""},
	}
	for _, c := range tags {
		if got := tagOf(c.name); got != c.want {
			t.Errorf("tagOf(%q) = %q, want %q", c.name, got, c.want)
		}
	}
	if got := tagOf(string(make([]byte, 300))); got != "" {
		t.Errorf("tagOf(NULs) = %q", got)
	}
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'a'
	}
	if got := tagOf(string(long)); len(got) != 128 {
		t.Errorf("a long name gives a tag of %d characters, want 128", len(got))
	}

	hosts := []struct{ server, want string }{
		{"registry.example.com", "registry.example.com"},
		{"https://registry.example.com/", "registry.example.com"},
		{"http://127.0.0.1:5000", "127.0.0.1:5000"},
	}
	for _, c := range hosts {
		if got := registryHost(c.server); got != c.want || !registryHostRe.MatchString(got) {
			t.Errorf("registryHost(%q) = %q, want %q (a host[:port])", c.server, got, c.want)
		}
	}
	for _, bad := range []string{"registry.example.com/path", "user@host", "host:port"} {
		if registryHostRe.MatchString(registryHost(bad)) {
			t.Errorf("registry server %q accepted", bad)
		}
	}

	n := imageNaming{prefix: "127.0.0.1:5000/team/", tag: "v1", built: map[string]bool{"web": true}}
	if got := n.resolve("web"); got != "127.0.0.1:5000/team/web:v1" {
		t.Errorf("resolve(web) = %q", got)
	}
	if got := n.ref("web:stable"); got != "127.0.0.1:5000/team/web:stable" {
		t.Errorf("ref(web:stable) = %q: the image name's own tag wins", got)
	}
	if got := n.resolve("mysql:8"); got != "mysql:8" {
		t.Errorf("resolve(mysql:8) = %q: an image imageBuild does not make is left alone", got)
	}
}
