package limits

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestIPExtractor(t *testing.T) {
	t.Parallel()
	type given struct {
		mode, trusted string
		remote        string
		headers       map[string][]string
	}
	for _, tc := range []struct {
		name   string
		given  given
		expect string // Identity
	}{
		{"direct ignores XFF", given{"direct", "", "203.0.113.7:4711",
			map[string][]string{"X-Forwarded-For": {"1.2.3.4"}, "X-Real-Ip": {"5.6.7.8"}}}, "ip:203.0.113.7"},
		{"direct IPv6 grouped by /64", given{"direct", "", "[2001:db8:aa:bb:1:2:3:4]:443", nil}, "ip:2001:db8:aa:bb::/64"},
		{"direct IPv4-mapped IPv6 is IPv4", given{"direct", "", "[::ffff:203.0.113.7]:1", nil}, "ip:203.0.113.7"},
		{"xff from untrusted peer ignored", given{"xff", "10.0.0.0/8", "198.51.100.9:1",
			map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}}, "ip:198.51.100.9"},
		{"xff takes first untrusted from the right", given{"xff", "10.0.0.0/8", "10.0.0.2:1",
			map[string][]string{"X-Forwarded-For": {"6.6.6.6, 203.0.113.7, 10.0.0.1"}}}, "ip:203.0.113.7"},
		{"xff joins multiple header lines", given{"xff", "10.0.0.0/8", "10.0.0.2:1",
			map[string][]string{"X-Forwarded-For": {"6.6.6.6", "203.0.113.7", "10.0.0.1"}}}, "ip:203.0.113.7"},
		{"xff garbage left of client is irrelevant", given{"xff", "10.0.0.0/8", "10.0.0.2:1",
			map[string][]string{"X-Forwarded-For": {"not-an-ip, 203.0.113.7"}}}, "ip:203.0.113.7"},
		{"xff garbage next to proxy falls back to last trusted hop", given{"xff", "10.0.0.0/8", "10.0.0.2:1",
			map[string][]string{"X-Forwarded-For": {"not-an-ip, 10.0.0.1"}}}, "ip:10.0.0.1"},
		{"xff missing header is the peer", given{"xff", "10.0.0.0/8", "10.0.0.2:1", nil}, "ip:10.0.0.2"},
		{"xff private ranges not trusted by default", given{"xff", "10.0.0.1", "192.168.1.1:1",
			map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}}, "ip:192.168.1.1"},
		{"xff loopback not trusted by default", given{"xff", "10.0.0.1", "127.0.0.1:1",
			map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}}, "ip:127.0.0.1"},
		{"xff IPv6 client grouped", given{"xff", "10.0.0.0/8", "10.0.0.2:1",
			map[string][]string{"X-Forwarded-For": {"2001:db8:1:2:3:4:5:6"}}}, "ip:2001:db8:1:2::/64"},
		{"x-real-ip from trusted proxy", given{"x-real-ip", "10.0.0.1", "10.0.0.1:1",
			map[string][]string{"X-Real-Ip": {"203.0.113.7"}}}, "ip:203.0.113.7"},
		{"x-real-ip from untrusted peer ignored", given{"x-real-ip", "10.0.0.1", "10.0.0.9:1",
			map[string][]string{"X-Real-Ip": {"203.0.113.7"}}}, "ip:10.0.0.9"},
		{"x-real-ip garbage is the peer", given{"real-ip", "10.0.0.1", "10.0.0.1:1",
			map[string][]string{"X-Real-Ip": {"nope"}}}, "ip:10.0.0.1"},
		{"cloudflare from edge", given{"cloudflare", "173.245.48.0/20", "173.245.48.5:1",
			map[string][]string{"Cf-Connecting-Ip": {"203.0.113.7"}, "X-Forwarded-For": {"6.6.6.6"}}}, "ip:203.0.113.7"},
		{"cloudflare header from a direct caller ignored", given{"cloudflare", "173.245.48.0/20", "198.51.100.9:1",
			map[string][]string{"Cf-Connecting-Ip": {"203.0.113.7"}}}, "ip:198.51.100.9"},
		{"vercel forwarded-for", given{"vercel", "0.0.0.0/0,::/0", "10.1.1.1:1",
			map[string][]string{"X-Vercel-Forwarded-For": {"203.0.113.7"}, "X-Real-Ip": {"6.6.6.6"}}}, "ip:203.0.113.7"},
		{"vercel falls back to x-real-ip", given{"vercel", "10.0.0.0/8", "10.1.1.1:1",
			map[string][]string{"X-Real-Ip": {"203.0.113.8"}}}, "ip:203.0.113.8"},
		{"vercel untrusted peer", given{"vercel", "10.0.0.0/8", "198.51.100.9:1",
			map[string][]string{"X-Vercel-Forwarded-For": {"203.0.113.7"}}}, "ip:198.51.100.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x, err := ParseIPSource(tc.given.mode, tc.given.trusted)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.given.remote
			for k, vs := range tc.given.headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			got, err := x.Identity(r)
			if err != nil || got != tc.expect {
				t.Fatalf("Identity = %q, %v; want %q", got, err, tc.expect)
			}
		})
	}
}

func TestParseIPSourceRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode, trusted string
		proxies       bool // the trusted ranges are what is wrong
	}{
		{"", "", false},              // no mode: start-up must fail
		{"auto", "", false},          // unknown mode
		{"xff", "", true},            // proxies without trusted ranges
		{"cloudflare", "", true},     //
		{"vercel", "", true},         //
		{"x-real-ip", "", true},      //
		{"direct", "10.0.0.1", true}, // direct has no proxies
		{"xff", "10.0.0.0/33", true},
		{"xff", "example.com", true},
	} {
		_, err := ParseIPSource(tc.mode, tc.trusted)
		if !errors.Is(err, ErrInvalidConfig) || errors.Is(err, ErrTrustedProxies) != tc.proxies {
			t.Errorf("ParseIPSource(%q, %q) = %v, want ErrInvalidConfig (ErrTrustedProxies: %v)", tc.mode, tc.trusted, err, tc.proxies)
		}
	}
}

func TestIPExtractorUnparsablePeer(t *testing.T) {
	t.Parallel()
	x, _ := ParseIPSource("direct", "")
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.RemoteAddr = "@unix"
	if _, err := x.Identity(r); !errors.Is(err, ErrNoClientIP) {
		t.Fatalf("err = %v", err)
	}
	if got := x.EchoIPExtractor()(r); got != "" {
		t.Fatalf("EchoIPExtractor = %q", got)
	}
}
