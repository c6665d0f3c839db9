package scm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The URL guard keeps Cyclone from being used to reach addresses a user of the API
// must not reach through it: link-local networks (where clouds serve instance
// metadata and credentials), cloud metadata addresses, multicast and unspecified
// addresses. Loopback and private addresses stay allowed: SCMs are often
// self-hosted on the same host or network.
//
// The check runs twice: on the server URL before any request (CheckURL), and on the
// address each connection actually dials (HTTPClient's dialer), so a DNS name that
// changes its answer between the two cannot slip through. The svn program dials by
// itself: CheckHost right before running it is the best that can be done there.

// lookupIP resolves a host name; tests replace it to make a name resolve to an
// address no real resolver here would return.
var lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// metadataAddrs are cloud instance-metadata endpoints outside the link-local ranges
// (169.254.169.254, used by most clouds, is link-local and refused with them).
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure, OpenStack, ...
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("fd00:ec2::254"),   // AWS over IPv6
}

// refusedPrefixes are ranges no SCM server lives in.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network"; 0.0.0.0 is the unspecified address
	netip.MustParsePrefix("169.254.0.0/16"),     // IPv4 link-local
	netip.MustParsePrefix("fe80::/10"),          // IPv6 link-local
	netip.MustParsePrefix("224.0.0.0/4"),        // IPv4 multicast
	netip.MustParsePrefix("ff00::/8"),           // IPv6 multicast
	netip.MustParsePrefix("255.255.255.255/32"), // broadcast
}

// CheckIP reports why Cyclone must not connect to ip, or nil when it may.
func CheckIP(ip netip.Addr) error {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return fmt.Errorf("%w: invalid address", ErrBadURL)
	}
	if ip.IsUnspecified() {
		return fmt.Errorf("%w: %s is the unspecified address", ErrBadURL, ip)
	}
	for _, m := range metadataAddrs {
		if ip == m {
			return fmt.Errorf("%w: %s is a cloud metadata address", ErrBadURL, ip)
		}
	}
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
		return fmt.Errorf("%w: %s is a link-local address", ErrBadURL, ip)
	}
	if ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return fmt.Errorf("%w: %s is a multicast address", ErrBadURL, ip)
	}
	for _, p := range refusedPrefixes {
		if p.Contains(ip) {
			return fmt.Errorf("%w: %s is in %s", ErrBadURL, ip, p)
		}
	}
	return nil
}

// CheckHost resolves host (a name or an IP literal, IPv6 with or without brackets)
// and checks every address it resolves to: one refused address refuses the host. A
// name that does not exist is ErrBadURL; a resolver failure is ErrUnreachable.
func CheckHost(ctx context.Context, host string) error {
	_, err := resolve(ctx, host)
	return err
}

// resolve returns host's addresses once they all pass CheckIP.
func resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return nil, fmt.Errorf("%w: no host", ErrBadURL)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := CheckIP(ip); err != nil {
			return nil, err
		}
		return []netip.Addr{ip}, nil
	}
	ips, err := lookupIP(ctx, host)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return nil, fmt.Errorf("%w: host %q does not resolve", ErrBadURL, host)
		}
		return nil, fmt.Errorf("%w: resolving %q: %w", ErrUnreachable, host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%w: host %q has no address", ErrBadURL, host)
	}
	for _, ip := range ips {
		if err := CheckIP(ip); err != nil {
			return nil, fmt.Errorf("host %q resolves to a refused address: %w", host, err)
		}
	}
	return ips, nil
}

// CheckURL checks an SCM server URL before anything is sent to it: http or https
// (and svn://, which svnserve speaks, for Subversion), a host, no user name or
// password in the URL (credentials travel separately), and every address the host
// resolves to passing CheckIP. The error wraps ErrBadURL and says why.
func CheckURL(scmType, raw string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return CheckURLContext(ctx, scmType, raw)
}

// CheckURLContext is CheckURL under the caller's context.
func CheckURLContext(ctx context.Context, scmType, raw string) error {
	_, err := ResolveURL(ctx, scmType, raw)
	return err
}

// ResolveURL is CheckURLContext returning the addresses it checked, for a program
// that dials by itself and can be told to connect to exactly those (git's
// http.curloptResolve), so a DNS answer changing after the check is not used.
func ResolveURL(ctx context.Context, scmType, raw string) ([]netip.Addr, error) {
	u, err := parseURL(scmType, raw)
	if err != nil {
		return nil, err
	}
	return resolve(ctx, u.Hostname())
}

// parseURL does CheckURL's checks that need no resolver.
func parseURL(scmType, raw string) (*url.URL, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("%w: empty URL", ErrBadURL)
	}
	for _, r := range raw {
		if r < 0x20 || r == 0x7f || r == ' ' {
			return nil, fmt.Errorf("%w: the URL contains spaces or control characters", ErrBadURL)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: not a URL", ErrBadURL)
	}
	switch scheme := strings.ToLower(u.Scheme); {
	case scheme == "http" || scheme == "https":
	case scheme == "svn" && scmType == "SVN":
	case scheme == "":
		return nil, fmt.Errorf("%w: the URL needs a scheme (http:// or https://)", ErrBadURL)
	default:
		allowed := "http and https"
		if scmType == "SVN" {
			allowed = "http, https and svn"
		}
		return nil, fmt.Errorf("%w: scheme %q is not allowed (only %s)", ErrBadURL, u.Scheme, allowed)
	}
	if u.Opaque != "" {
		return nil, fmt.Errorf("%w: not a hierarchical URL", ErrBadURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: the URL must not contain a user name or password (give them as credentials)", ErrBadURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w: the URL has no host", ErrBadURL)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: bad port %q", ErrBadURL, p)
		}
	}
	return u, nil
}

// controlDial refuses a connection to an address CheckIP refuses; it runs on the
// address being dialed, after any name resolution.
func controlDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: dialing %q: %w", ErrBadURL, address, err)
	}
	return CheckIP(ap.Addr())
}

// guardedDialer resolves with lookupIP, refuses a host with any refused address,
// then dials the addresses in turn through a net.Dialer whose Control checks the
// address again right before connect.
type guardedDialer struct {
	net.Dialer
}

func (d *guardedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	ips, err := resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, ip := range ips {
		c, err := d.Dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// sensitiveHeaders are dropped when a redirect leaves the original host (Go's client
// drops Authorization and Cookie by itself, not GitLab's PRIVATE-TOKEN).
var sensitiveHeaders = []string{"Authorization", "Private-Token", "Job-Token", "Cookie", "Proxy-Authorization"}

// HTTPClient returns the client every SCM API call goes through: connections are
// dialed only to addresses CheckIP allows (checked on the dialed address), no proxy
// is taken from the environment, redirects are followed at most 5 times and only to
// http/https URLs on allowed addresses (credentials headers dropped when the host
// changes), and every phase has a timeout. timeout bounds a whole request,
// including reading the body; 0 means 60 seconds.
func HTTPClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	d := &guardedDialer{Dialer: net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		Control:   controlDial,
	}}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           20,
		MaxIdleConnsPerHost:    5,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  30 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return fmt.Errorf("%w: stopped after 5 redirects", ErrUnreachable)
			}
			if s := req.URL.Scheme; s != "http" && s != "https" {
				return fmt.Errorf("%w: redirect to scheme %q", ErrBadURL, s)
			}
			if req.URL.User != nil {
				return fmt.Errorf("%w: redirect to a URL with a user name or password", ErrBadURL)
			}
			if err := CheckHost(req.Context(), req.URL.Hostname()); err != nil {
				return fmt.Errorf("redirect refused: %w", err)
			}
			if req.URL.Host != via[0].URL.Host {
				for _, h := range sensitiveHeaders {
					req.Header.Del(h)
				}
			}
			return nil
		},
	}
}

// CheckURLOffline does CheckURL's checks without resolving a host name: the scheme,
// the host, no credentials in the URL, and an IP-literal host passing CheckIP. It
// suits a URL saved for later, whose name is checked again when it is dialed.
func CheckURLOffline(scmType, raw string) error {
	u, err := parseURL(scmType, raw)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		return CheckIP(ip)
	}
	return nil
}
