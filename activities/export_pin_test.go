package activities

import (
	"context"
	"net/netip"
	"net/url"
	"slices"
	"testing"
)

// SetGitResolver makes checkouts resolve http(s) repository hosts with resolve
// until the test ends.
func SetGitResolver(t testing.TB, resolve func(ctx context.Context, scmType, raw string) ([]netip.Addr, error)) {
	old := resolveGitURL
	resolveGitURL = resolve
	t.Cleanup(func() { resolveGitURL = old })
}

// RealGitResolver is the resolver checkouts use outside tests.
var RealGitResolver = resolveGitURL

func TestGitResolvePins(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::1")
	mapped := netip.MustParseAddr("::ffff:192.0.2.8")
	for _, tc := range []struct {
		url   string
		addrs []netip.Addr
		want  []string
	}{
		{"https://git.example.com/a.git", []netip.Addr{v4}, []string{"git.example.com:443:192.0.2.7"}},
		{"http://git.example.com/a.git", []netip.Addr{v4, v6}, []string{"git.example.com:80:192.0.2.7,[2001:db8::1]"}},
		{"https://git.example.com:8443/a.git", []netip.Addr{mapped}, []string{"git.example.com:8443:192.0.2.8"}},
		{"https://git.example.com./a.git", []netip.Addr{v4}, []string{"git.example.com.:443:192.0.2.7", "git.example.com:443:192.0.2.7"}},
		{"https://192.0.2.7/a.git", []netip.Addr{v4}, nil},
		{"https://[2001:db8::1]:8443/a.git", []netip.Addr{v6}, nil},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := gitResolvePins(u, tc.addrs); !slices.Equal(got, tc.want) {
			t.Errorf("gitResolvePins(%s) = %q, want %q", tc.url, got, tc.want)
		}
	}
	if got := gitPinArgs([]string{"h:443:192.0.2.7"}); !slices.Equal(got, []string{"-c", "http.curloptResolve=h:443:192.0.2.7"}) {
		t.Errorf("gitPinArgs = %q", got)
	}
}
