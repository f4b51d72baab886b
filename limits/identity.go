package limits

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"
)

// IPSource is how the deployment delivers the client address. There is no
// default: a wrong guess either lets clients pick their own rate-limit key
// (trusting headers nobody overwrites) or puts every client in the proxy's
// bucket, so the mode must be stated.
type IPSource string

const (
	// IPSourceDirect: clients connect to this process; only the TCP peer
	// address counts and every header is ignored.
	IPSourceDirect IPSource = "direct"
	// IPSourceXFF: behind proxies that append to X-Forwarded-For. The list is
	// read right to left, skipping trusted proxies; the first address not in
	// a trusted range is the client. Entries left of it were written by the
	// client and are ignored.
	//
	// Warning: a client whose own address is inside a trusted range is
	// taken for a proxy, so the header it writes is believed and it can
	// choose any rate-limit identity. Trust only the proxies' addresses,
	// never a whole network other clients live in (a pod or VPC range).
	IPSourceXFF IPSource = "xff"
	// IPSourceRealIP: behind a proxy that overwrites X-Real-IP; the header is
	// believed only when the peer is a trusted proxy.
	IPSourceRealIP IPSource = "x-real-ip"
	// IPSourceCloudflare: behind Cloudflare; CF-Connecting-IP is believed only
	// when the peer is in the trusted ranges (Cloudflare's published ranges,
	// https://www.cloudflare.com/ips/). A direct caller cannot spoof it.
	IPSourceCloudflare IPSource = "cloudflare"
	// IPSourceVercel: on Vercel; x-vercel-forwarded-for (then x-real-ip) is
	// believed only from trusted peers. Vercel functions are reachable only
	// through Vercel's edge, so "0.0.0.0/0,::/0" is a deliberate, valid
	// choice there, but it must be written down.
	IPSourceVercel IPSource = "vercel"
)

// ErrNoClientIP: no usable client address in the request.
var ErrNoClientIP = errors.New("limits: no client IP")

// ErrTrustedProxies marks configuration errors in the trusted proxy ranges
// (missing, unwanted or unparsable): the *ConfigError of such an error has
// Field FieldTrustedProxies and wraps it.
var ErrTrustedProxies = errors.New("trusted proxies")

// IPExtractor finds the client address of a request for one deployment
// mode. Never use Echo v4's RealIP() without an e.IPExtractor for limiting:
// it believes the leftmost X-Forwarded-For entry, which the client writes.
type IPExtractor struct {
	source  IPSource
	trusted []netip.Prefix
}

// NewIPExtractor builds an extractor. Every mode except direct requires at
// least one trusted proxy range; direct accepts none. Errors are
// *ConfigError with Field FieldIPSource or FieldTrustedProxies.
func NewIPExtractor(source IPSource, trusted ...netip.Prefix) (*IPExtractor, error) {
	switch source {
	case IPSourceDirect:
		if len(trusted) > 0 {
			return nil, configErr(FieldTrustedProxies, "", "%w: IP source %q takes none", ErrTrustedProxies, source)
		}
	case IPSourceXFF, IPSourceRealIP, IPSourceCloudflare, IPSourceVercel:
		if len(trusted) == 0 {
			return nil, configErr(FieldTrustedProxies, "", "%w: IP source %q needs the trusted proxy ranges", ErrTrustedProxies, source)
		}
	case "":
		return nil, configErr(FieldIPSource, "", "IP source is required (direct, xff, x-real-ip, cloudflare or vercel)")
	default:
		return nil, configErr(FieldIPSource, string(source), "unknown IP source %q (want direct, xff, x-real-ip, cloudflare or vercel)", source)
	}
	t := make([]netip.Prefix, len(trusted))
	for i, p := range trusted {
		if !p.IsValid() {
			return nil, configErr(FieldTrustedProxies, p.String(), "%w: invalid prefix %v", ErrTrustedProxies, p)
		}
		t[i] = p.Masked()
	}
	return &IPExtractor{source: source, trusted: t}, nil
}

// ParseIPSource builds an extractor from env-style strings: mode is one of
// direct, xff (alias x-forwarded-for), x-real-ip (alias real-ip), cloudflare,
// vercel; trustedCIDRs is a comma-separated list of CIDRs or single
// addresses. Proposed variables: RATE_LIMIT_IP_SOURCE and
// RATE_LIMIT_TRUSTED_PROXIES. An empty mode is an error: start-up must fail.
// Errors are *ConfigError naming FieldIPSource or FieldTrustedProxies.
func ParseIPSource(mode, trustedCIDRs string) (*IPExtractor, error) {
	src := IPSource(strings.ToLower(strings.TrimSpace(mode)))
	switch src {
	case "x-forwarded-for":
		src = IPSourceXFF
	case "real-ip":
		src = IPSourceRealIP
	}
	var trusted []netip.Prefix
	for _, s := range splitList(trustedCIDRs) {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, configErr(FieldTrustedProxies, s, "%w: %q: %v", ErrTrustedProxies, s, err)
		}
		trusted = append(trusted, p)
	}
	return NewIPExtractor(src, trusted...)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Source reports the mode.
func (x *IPExtractor) Source() IPSource { return x.source }

// TrustedProxies returns a copy of the trusted ranges, masked.
func (x *IPExtractor) TrustedProxies() []netip.Prefix {
	return append([]netip.Prefix(nil), x.trusted...)
}

// ClientIP returns the client address of r (IPv4-mapped addresses unmapped,
// zones dropped).
func (x *IPExtractor) ClientIP(r *http.Request) (netip.Addr, error) {
	peer, ok := parseHostAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: unparsable peer address", ErrNoClientIP)
	}
	if x.source == IPSourceDirect || !x.isTrusted(peer) {
		return peer, nil
	}
	switch x.source {
	case IPSourceXFF:
		return x.fromXFF(r.Header.Values("X-Forwarded-For"), peer), nil
	case IPSourceRealIP:
		return headerIP(r.Header.Get("X-Real-Ip"), peer), nil
	case IPSourceCloudflare:
		return headerIP(r.Header.Get("Cf-Connecting-Ip"), peer), nil
	case IPSourceVercel:
		if v := r.Header.Get("X-Vercel-Forwarded-For"); v != "" {
			first, _, _ := strings.Cut(v, ",")
			return headerIP(first, peer), nil
		}
		return headerIP(r.Header.Get("X-Real-Ip"), peer), nil
	}
	return peer, nil
}

// Identity is the rate-limit identity of r: "ip:" plus the client address,
// IPv6 grouped by its /64 (one host can rotate through a whole /64).
func (x *IPExtractor) Identity(r *http.Request) (string, error) {
	ip, err := x.ClientIP(r)
	if err != nil {
		return "", err
	}
	return IPIdentity(ip), nil
}

// IPIdentity is the identity of one address: "ip:203.0.113.7" or
// "ip:2001:db8:1:2::/64".
func IPIdentity(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return "ip:" + netip.PrefixFrom(ip, 64).Masked().String()
	}
	return "ip:" + ip.String()
}

// EchoIPExtractor adapts x for e.IPExtractor, so c.RealIP() elsewhere in the
// application is as trustworthy as the limiter's view.
func (x *IPExtractor) EchoIPExtractor() echo.IPExtractor {
	return func(r *http.Request) string {
		ip, err := x.ClientIP(r)
		if err != nil {
			return ""
		}
		return ip.String()
	}
}

func (x *IPExtractor) isTrusted(a netip.Addr) bool {
	for _, p := range x.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fromXFF walks the joined X-Forwarded-For list from the right. The peer is a
// trusted proxy; each address it vouches for is either another trusted proxy
// (keep walking) or the client (stop). An unparsable entry or the end of the
// list leaves the last vouched-for address: a trusted hop, never a value the
// client chose.
func (x *IPExtractor) fromXFF(lines []string, peer netip.Addr) netip.Addr {
	last := peer
	for i := len(lines) - 1; i >= 0; i-- {
		parts := strings.Split(lines[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, ok := parseHostAddr(strings.TrimSpace(parts[j]))
			if !ok {
				return last
			}
			if !x.isTrusted(a) {
				return a
			}
			last = a
		}
	}
	return last
}

func headerIP(v string, peer netip.Addr) netip.Addr {
	if a, ok := parseHostAddr(strings.TrimSpace(v)); ok {
		return a
	}
	return peer
}

// parseHostAddr accepts "ip", "ip:port", "[ipv6]" and "[ipv6]:port".
func parseHostAddr(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
