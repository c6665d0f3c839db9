package scm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDNS makes lookupIP answer from names for the test's duration (other names do
// not exist).
func fakeDNS(t *testing.T, names map[string][]string) {
	t.Helper()
	old := lookupIP
	lookupIP = func(_ context.Context, host string) ([]netip.Addr, error) {
		addrs, ok := names[host]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
	t.Cleanup(func() { lookupIP = old })
}

func TestCheckURL(t *testing.T) {
	fakeDNS(t, map[string][]string{
		"git.example.test":      {"10.1.2.3"},
		"local.example.test":    {"127.0.0.1", "::1"},
		"metadata.example.test": {"169.254.169.254"},
		"rebind.example.test":   {"10.0.0.1", "fe80::1"},
		"ali.example.test":      {"100.100.100.200"},
		"ec2v6.example.test":    {"fd00:ec2::254"},
		"mapped.example.test":   {"::ffff:169.254.1.1"},
	})
	for _, tc := range []struct {
		typ, url string
		ok       bool
		why      string // part of the error message
	}{
		{"Github", "https://github.example.test", false, "does not resolve"},
		{"Github", "https://git.example.test", true, ""},
		{"Gitlab", "http://git.example.test:8080/gitlab", true, ""},
		{"Gitlab", "http://127.0.0.1:8080", true, ""},
		{"Gitlab", "http://[::1]:8080", true, ""},
		{"Gitlab", "http://local.example.test", true, ""},
		{"Gitlab", "http://192.168.1.10", true, ""},
		{"SVN", "svn://127.0.0.1:3690/repos", true, ""},
		{"SVN", "https://127.0.0.1/svn", true, ""},
		{"Github", "svn://127.0.0.1", false, `scheme "svn" is not allowed`},
		{"SVN", "svn+ssh://127.0.0.1/repos", false, "is not allowed"},
		{"Github", "ftp://127.0.0.1", false, `scheme "ftp"`},
		{"Github", "file:///etc/passwd", false, `scheme "file"`},
		{"Github", "gopher://127.0.0.1", false, "not allowed"},
		{"Github", "127.0.0.1:80", false, ""},
		{"Github", "github.com", false, "scheme"},
		{"Github", "", false, "empty"},
		{"Github", "https://", false, "no host"},
		{"Github", "https://user:pass@127.0.0.1", false, "user name or password"},
		{"Github", "https://user@127.0.0.1", false, "user name or password"},
		{"Github", "https://127.0.0.1:99999", false, "bad port"},
		{"Github", "https://127.0.0.1/a b", false, "spaces"},
		{"Github", "https://127.0.0.1/\n", false, "control"},
		{"Github", "http://169.254.169.254/latest/meta-data", false, "metadata"},
		{"Github", "http://169.254.1.1", false, "link-local"},
		{"Github", "http://[fe80::1]", false, "link-local"},
		{"Github", "http://[fe80::1%25eth0]", false, "link-local"},
		{"Github", "http://[::ffff:169.254.169.254]", false, "metadata"},
		{"Github", "http://0.0.0.0", false, "unspecified"},
		{"Github", "http://[::]", false, "unspecified"},
		{"Github", "http://0.1.2.3", false, "0.0.0.0/8"},
		{"Github", "http://239.1.2.3", false, "multicast"},
		{"Github", "http://[ff0e::1]", false, "multicast"},
		{"Github", "http://100.100.100.200", false, "metadata"},
		{"Github", "http://[fd00:ec2::254]", false, "metadata"},
		{"Github", "http://metadata.example.test", false, "metadata"},
		{"Github", "http://rebind.example.test", false, "link-local"},
		{"Github", "http://ali.example.test", false, "metadata"},
		{"Github", "http://ec2v6.example.test", false, "metadata"},
		{"Github", "http://mapped.example.test", false, "link-local"},
	} {
		err := CheckURL(tc.typ, tc.url)
		if tc.ok {
			if err != nil {
				t.Errorf("CheckURL(%s, %q) = %v, want nil", tc.typ, tc.url, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadURL) {
			t.Errorf("CheckURL(%s, %q) = %v, want ErrBadURL", tc.typ, tc.url, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.why) {
			t.Errorf("CheckURL(%s, %q) = %q, want it to say %q", tc.typ, tc.url, err, tc.why)
		}
	}
}

func TestCheckHostResolverFailureIsUnreachable(t *testing.T) {
	old := lookupIP
	lookupIP = func(context.Context, string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true}
	}
	t.Cleanup(func() { lookupIP = old })
	if err := CheckHost(context.Background(), "x.example.test"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
}

func TestControlDialChecksTheDialedAddress(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:80":         true,
		"10.0.0.1:443":         true,
		"[::1]:80":             true,
		"169.254.169.254:80":   false,
		"[fe80::1%eth0]:80":    false,
		"100.100.100.200:80":   false,
		"0.0.0.0:80":           false,
		"[fd00:ec2::254]:80":   false,
		"[::ffff:a9fe:a9fe]:1": false,
	} {
		err := controlDial("tcp", addr, nil)
		if ok != (err == nil) {
			t.Errorf("controlDial(%q) = %v, want ok=%v", addr, err, ok)
		}
		if err != nil && !errors.Is(err, ErrBadURL) {
			t.Errorf("controlDial(%q) = %v, want ErrBadURL", addr, err)
		}
	}
}

func TestHTTPClientDialsOnlyAllowedAddresses(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/to-evil-name":
			http.Redirect(w, r, "http://metadata.example.test/", http.StatusFound)
		case "/to-ftp":
			http.Redirect(w, r, "ftp://127.0.0.1/", http.StatusFound)
		case "/to-other-host":
			// Same server under another name: the credentials must not follow.
			http.Redirect(w, r, "http://other.example.test:"+r.Host[strings.LastIndex(r.Host, ":")+1:]+"/echo", http.StatusFound)
		case "/echo":
			_, _ = io.WriteString(w, r.Host+" auth="+r.Header.Get("Authorization")+" pt="+r.Header.Get("Private-Token"))
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	fakeDNS(t, map[string][]string{
		"scm.example.test":      {"127.0.0.1"},
		"other.example.test":    {"127.0.0.1"},
		"metadata.example.test": {"169.254.169.254"},
		"mixed.example.test":    {"127.0.0.1", "169.254.1.1"},
	})
	c := HTTPClient(5 * time.Second)
	if tr := c.Transport.(*http.Transport); tr.Proxy != nil {
		t.Error("the transport takes a proxy from the environment")
	}

	get := func(url string, hdr map[string]string) (string, error) {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}

	// A name resolving to loopback is fine, through the guarded dialer.
	if body, err := get("http://scm.example.test:"+port+"/", nil); err != nil || body != "ok" {
		t.Fatalf("allowed name: %q, %v", body, err)
	}
	// A name resolving to a metadata address is refused before any connection.
	if _, err := get("http://metadata.example.test:"+port+"/", nil); !errors.Is(err, ErrBadURL) {
		t.Errorf("metadata name: err = %v, want ErrBadURL", err)
	}
	// One refused address among the answers refuses the host.
	if _, err := get("http://mixed.example.test:"+port+"/", nil); !errors.Is(err, ErrBadURL) {
		t.Errorf("mixed name: err = %v, want ErrBadURL", err)
	}
	// A literal link-local address is refused by the dialer too.
	if _, err := get("http://169.254.169.254/", nil); !errors.Is(err, ErrBadURL) {
		t.Errorf("literal metadata address: err = %v, want ErrBadURL", err)
	}
	before := hits.Load()
	for _, path := range []string{"/to-metadata", "/to-evil-name", "/to-ftp"} {
		if _, err := get(srv.URL+path, nil); !errors.Is(err, ErrBadURL) {
			t.Errorf("redirect %s: err = %v, want ErrBadURL", path, err)
		}
	}
	if got := hits.Load() - before; got != 3 {
		t.Errorf("the server saw %d requests for 3 refused redirects, want 3 (only the first hops)", got)
	}
	// Credentials headers do not follow a redirect to another host.
	body, err := get(srv.URL+"/to-other-host", map[string]string{"Authorization": "Bearer s3cret", "Private-Token": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(body, "s3cret") || !strings.HasPrefix(body, "other.example.test:") {
		t.Errorf("after a cross-host redirect the server saw %q", body)
	}
}

func TestRedact(t *testing.T) {
	if got := Redact("token abc and abc, pw xyz", "abc", "", "xyz"); got != "token *** and ***, pw ***" {
		t.Errorf("Redact = %q", got)
	}
}
