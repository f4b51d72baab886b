package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/digis/jobworker/internal/logtest"
	"github.com/digis/jobworker/webhooks"
	"github.com/digis/jobworker/webhooks/webhookstest"
)

// The test vectors of docs/qstash-protocol.md §5.5 (dev-server keys).
const (
	vecCurrent = webhookstest.QStashDevCurrentKey
	vecNext    = webhookstest.QStashDevNextKey
	vecURL     = "https://example.com/api/webhook"
	vecBody    = `{"hello":"world"}`

	vecV1 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJrNkk1Y2FrVTVlckw4S2pTVVZUTm93bkR3Y2N2dTVrVTFIeGc4OHRvRllnPSJ9.9S3l-jeQHcsPKpzXLYE7gKe-S_mxtiU1c6ECNu3hCS4"
	vecV2 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJrNkk1Y2FrVTVlckw4S2pTVVZUTm93bkR3Y2N2dTVrVTFIeGc4OHRvRllnPSJ9.NcxPmrUP0ugCMl87nfw2Al2YmIk4QtMV6JqCubCRcVw"
	vecV3 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjowLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJrNkk1Y2FrVTVlckw4S2pTVVZUTm93bkR3Y2N2dTVrVTFIeGc4OHRvRllnIn0.NQUmTIS-5nY5Xq_lYRkd_xNjsoPnffpJD4zQlvJH-Y8"
	vecV4 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjowLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiI0N0RFUXBqOEhCU2EtX1RJbVctNUpDZXVRZVJrbTVOTXBKV1pHM2hTdUZVPSJ9.tUm8SQEVmFTuwzihZH1dMwctEGR-4-xAahw74uDc3j0"
	vecV5 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vayIsImV4cCI6MTcwMDAwMDMwMCwibmJmIjowLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6Imp3dF9UZXN0VmVjdG9yMDAwMDAwMDAwMDAwMSIsImJvZHkiOiJvenV5cnRkWHZJT1lCOWVwM3FzR2lNUFBCdE51VTh0Q2p5NVRuSTNIYkZzPSJ9.32bNdqWHpm449Nv3avmVmJCOcKECFCdrfXaA5HGBvHU"
	vecV6 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9hcGkvd2ViaG9vaz90ZW5hbnQ9YSZ4PTEiLCJleHAiOjE3MDAwMDAzMDAsIm5iZiI6MTcwMDAwMDAwMCwiaWF0IjoxNzAwMDAwMDAwLCJqdGkiOiJqd3RfVGVzdFZlY3RvcjAwMDAwMDAwMDAwMDEiLCJib2R5IjoiTFBKTnVsLXdvdzRtNkRzcXhibmluaHNXSGx3ZnAwSmVjd1F6WXBPTG1DUT0ifQ.5Y5QIk0OU0LOHwG9cmjMiNJg9ACBIrCUJCeTanhgdJw"
)

// vecNow is inside every vector's validity window.
var vecNow = time.Unix(1700000100, 0)

type qstashBundle struct {
	v   *webhooks.QStashVerifier
	reg *prometheus.Registry
	log *logtest.Buffer
}

func setupQStash(t *testing.T, now time.Time) qstashBundle {
	t.Helper()
	b := qstashBundle{reg: prometheus.NewRegistry(), log: new(logtest.Buffer)}
	var err error
	b.v, err = webhooks.NewQStashVerifier(webhooks.QStashConfig{
		CurrentSigningKey: vecCurrent,
		NextSigningKey:    vecNext,
		Now:               func() time.Time { return now },
		Logger:            slog.New(slog.NewJSONHandler(b.log, nil)),
		Registerer:        b.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawJWT assembles a token from JSON segments and MACs it with HS256 by
// hand (independent of jwx), so header tricks can carry a valid MAC.
func rawJWT(key, header, payload string) string {
	in := b64(header) + "." + b64(payload)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

const hs256Header = `{"alg":"HS256","typ":"JWT"}`

// claimsJSON is the V1 claim set with edits applied (nil value = delete).
func claimsJSON(t *testing.T, edits map[string]any) string {
	t.Helper()
	c := webhookstest.QStashClaims(vecURL, []byte(vecBody), vecNow)
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func signed(t *testing.T, key string, edits map[string]any) string {
	t.Helper()
	c := webhookstest.QStashClaims(vecURL, []byte(vecBody), vecNow)
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok, err := webhookstest.SignQStash(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestQStashVerify(t *testing.T) {
	t.Parallel()

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	payloadV1 := claimsJSON(t, nil)
	jwxSign := func(alg jwa.SignatureAlgorithm, key any) string {
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.TypeKey, "JWT")
		tok, err := jws.Sign([]byte(payloadV1), jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(tok)
	}
	// A body whose hash has '-' or '_' in base64url, so its std-base64
	// claim differs in alphabet, not just padding.
	stdBody := []byte(vecBody)
	for i := 0; ; i++ {
		stdBody = []byte(vecBody + strings.Repeat(" ", i))
		if h := webhookstest.BodyHash(stdBody); strings.ContainsAny(h, "-_") {
			break
		}
	}
	stdSum := sha256.Sum256(stdBody)

	type given struct {
		token string
		url   string
		body  []byte
		now   time.Time
	}
	tests := []struct {
		name      string
		given     given
		wantCheck string // "" = accepted
		wantKey   string
	}{
		// docs/qstash-protocol.md §5.5 golden vectors.
		{name: "V1 current key, padded body claim", given: given{token: vecV1}, wantKey: "current"},
		{name: "V2 next key (rotation)", given: given{token: vecV2}, wantKey: "next"},
		{name: "V3 nbf 0, unpadded body claim", given: given{token: vecV3}, wantKey: "current"},
		{name: "V4 empty body", given: given{token: vecV4, body: []byte{}}, wantKey: "current"},
		{name: "V4 nil body", given: given{token: vecV4, body: nil}, wantKey: "current"},
		{name: "V5 binary body hashed as bytes", given: given{token: vecV5, body: []byte{0x00, 0xff, 0x10, 0x80}}, wantKey: "current"},
		{name: "V6 url with query", given: given{token: vecV6, url: vecURL + "?tenant=a&x=1", body: []byte("hello")}, wantKey: "current"},

		// Tokens minted now by jwx (webhookstest), as QStash does.
		{name: "jwx-signed current", given: given{token: signed(t, vecCurrent, nil)}, wantKey: "current"},
		{name: "jwx-signed next", given: given{token: signed(t, vecNext, nil)}, wantKey: "next"},
		{name: "empty aud and extra claims tolerated", given: given{token: signed(t, vecCurrent, map[string]any{"aud": "", "x": 1})}, wantKey: "current"},
		{name: "fractional exp", given: given{token: signed(t, vecCurrent, map[string]any{"exp": float64(vecNow.Unix()) + 299.5})}, wantKey: "current"},
		{name: "nbf equal to iat", given: given{token: signed(t, vecCurrent, map[string]any{"nbf": vecNow.Unix()})}, wantKey: "current"},
		{name: "typ lowercase jwt", given: given{token: rawJWT(vecCurrent, `{"alg":"HS256","typ":"jwt"}`, payloadV1)}, wantKey: "current"},
		{name: "no typ", given: given{token: rawJWT(vecCurrent, `{"alg":"HS256"}`, payloadV1)}, wantKey: "current"},

		// Forged and wrong keys.
		{name: "other key", given: given{token: signed(t, "sig_someoneElsesKey0000000000000", nil)}, wantCheck: webhooks.CheckSignature},
		{name: "empty key", given: given{token: rawJWT("", hs256Header, payloadV1)}, wantCheck: webhooks.CheckSignature},
		{name: "key base64-decoded by mistake", given: given{token: rawJWT("7kYjw48mhY7kAjqNGcy6cr29RJ6r", hs256Header, payloadV1)}, wantCheck: webhooks.CheckSignature},
		{name: "payload swapped under a valid signature", given: given{token: strings.Split(vecV3, ".")[0] + "." + strings.Split(vecV1, ".")[1] + "." + strings.Split(vecV3, ".")[2]}, wantCheck: webhooks.CheckSignature},
		{name: "HS256 header, HS512 MAC", given: given{token: func() string {
			in := b64(hs256Header) + "." + b64(payloadV1)
			mac := hmac.New(sha256.New224, []byte(vecCurrent))
			mac.Write([]byte(in))
			s := append(mac.Sum(nil), 0, 0, 0, 0)
			return in + "." + base64.RawURLEncoding.EncodeToString(s)
		}()}, wantCheck: webhooks.CheckSignature},

		// Algorithm pinning.
		{name: "alg none, empty signature", given: given{token: b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(payloadV1) + "."}, wantCheck: webhooks.CheckAlg},
		{name: "alg none with a valid HS256 MAC", given: given{token: rawJWT(vecCurrent, `{"alg":"none","typ":"JWT"}`, payloadV1)}, wantCheck: webhooks.CheckAlg},
		{name: "alg HS512 header with a valid HS256 MAC", given: given{token: rawJWT(vecCurrent, `{"alg":"HS512","typ":"JWT"}`, payloadV1)}, wantCheck: webhooks.CheckAlg},
		{name: "alg hs256 lowercase", given: given{token: rawJWT(vecCurrent, `{"alg":"hs256","typ":"JWT"}`, payloadV1)}, wantCheck: webhooks.CheckAlg},
		{name: "genuine HS512 with the current key", given: given{token: jwxSign(jwa.HS512, []byte(vecCurrent))}, wantCheck: webhooks.CheckAlg},
		{name: "genuine HS384", given: given{token: jwxSign(jwa.HS384, []byte(vecCurrent))}, wantCheck: webhooks.CheckAlg},
		{name: "genuine RS256", given: given{token: jwxSign(jwa.RS256, rsaKey)}, wantCheck: webhooks.CheckAlg},
		{name: "no alg", given: given{token: rawJWT(vecCurrent, `{"typ":"JWT"}`, payloadV1)}, wantCheck: webhooks.CheckAlg},
		{name: "alg not a string", given: given{token: rawJWT(vecCurrent, `{"alg":256,"typ":"JWT"}`, payloadV1)}, wantCheck: webhooks.CheckMalformed},
		{name: "typ JOSE+JSON", given: given{token: rawJWT(vecCurrent, `{"alg":"HS256","typ":"JOSE+JSON"}`, payloadV1)}, wantCheck: webhooks.CheckMalformed},
		{name: "crit header", given: given{token: rawJWT(vecCurrent, `{"alg":"HS256","crit":["exp"],"exp":1}`, payloadV1)}, wantCheck: webhooks.CheckMalformed},
		{name: "b64 false header", given: given{token: rawJWT(vecCurrent, `{"alg":"HS256","b64":false,"crit":["b64"]}`, payloadV1)}, wantCheck: webhooks.CheckMalformed},

		// Time.
		{name: "expired", given: given{token: vecV1, now: time.Unix(1700000305, 0)}, wantCheck: webhooks.CheckExpired},
		{name: "expired long ago", given: given{token: vecV1, now: time.Unix(1800000000, 0)}, wantCheck: webhooks.CheckExpired},
		{name: "exp reached, inside the 5 s skew", given: given{token: vecV1, now: time.Unix(1700000304, 0)}, wantKey: "current"},
		{name: "expired token signed by the next key says expired", given: given{token: vecV2, now: time.Unix(1700000400, 0)}, wantCheck: webhooks.CheckExpired},
		{name: "nbf in the future", given: given{token: vecV1, now: time.Unix(1699999990, 0)}, wantCheck: webhooks.CheckNotYetValid},
		{name: "nbf in the future inside skew", given: given{token: vecV1, now: time.Unix(1699999996, 0)}, wantKey: "current"},
		{name: "iat in the future beyond skew (nbf 0)", given: given{token: vecV3, now: time.Unix(1699999990, 0)}, wantCheck: webhooks.CheckIssuedInFuture},
		{name: "iat in the future inside skew (nbf 0)", given: given{token: vecV3, now: time.Unix(1699999996, 0)}, wantKey: "current"},
		{name: "exp 0 (jwx would skip it)", given: given{token: signed(t, vecCurrent, map[string]any{"exp": 0})}, wantCheck: webhooks.CheckClaims},
		{name: "iat 0", given: given{token: signed(t, vecCurrent, map[string]any{"iat": 0})}, wantCheck: webhooks.CheckClaims},

		// Subject.
		{name: "sub: trailing slash", given: given{token: vecV1, url: vecURL + "/"}, wantCheck: webhooks.CheckSubject},
		{name: "sub: extra query", given: given{token: vecV1, url: vecURL + "?a=1"}, wantCheck: webhooks.CheckSubject},
		{name: "sub: query missing", given: given{token: vecV6, url: vecURL, body: []byte("hello")}, wantCheck: webhooks.CheckSubject},
		{name: "sub: query reordered", given: given{token: vecV6, url: vecURL + "?x=1&tenant=a", body: []byte("hello")}, wantCheck: webhooks.CheckSubject},
		{name: "sub: http vs https", given: given{token: vecV1, url: "http://example.com/api/webhook"}, wantCheck: webhooks.CheckSubject},
		{name: "sub: other host", given: given{token: vecV1, url: "https://example.org/api/webhook"}, wantCheck: webhooks.CheckSubject},
		{name: "sub: explicit port", given: given{token: vecV1, url: "https://example.com:443/api/webhook"}, wantCheck: webhooks.CheckSubject},
		{name: "sub: case differs", given: given{token: vecV1, url: "https://example.com/API/webhook"}, wantCheck: webhooks.CheckSubject},
		{name: "empty url never matches", given: given{token: vecV1, url: "-"}, wantCheck: webhooks.CheckSubject},

		// Issuer.
		{name: "iss lowercase", given: given{token: signed(t, vecCurrent, map[string]any{"iss": "upstash"})}, wantCheck: webhooks.CheckIssuer},
		{name: "iss empty", given: given{token: signed(t, vecCurrent, map[string]any{"iss": ""})}, wantCheck: webhooks.CheckIssuer},

		// Body.
		{name: "body with a space", given: given{token: vecV1, body: []byte(`{"hello": "world"}`)}, wantCheck: webhooks.CheckBodyHash},
		{name: "body with trailing newline", given: given{token: vecV1, body: []byte(vecBody + "\n")}, wantCheck: webhooks.CheckBodyHash},
		{name: "body empty", given: given{token: vecV1, body: []byte{}}, wantCheck: webhooks.CheckBodyHash},
		{name: "binary body re-encoded as UTF-8", given: given{token: vecV5, body: []byte(string([]rune{0x00, 0xff, 0x10, 0x80}))}, wantCheck: webhooks.CheckBodyHash},
		{name: "body claim with double padding", given: given{token: signed(t, vecCurrent, map[string]any{"body": webhookstest.BodyHash([]byte(vecBody)) + "="})}, wantKey: "current"},
		{name: "body claim std base64", given: given{token: signed(t, vecCurrent, map[string]any{"body": base64.StdEncoding.EncodeToString(stdSum[:])}), body: stdBody}, wantCheck: webhooks.CheckBodyHash},
		{name: "body claim hex", given: given{token: signed(t, vecCurrent, map[string]any{"body": "93a239"})}, wantCheck: webhooks.CheckBodyHash},

		// Required claims and types.
		{name: "missing iss", given: given{token: signed(t, vecCurrent, map[string]any{"iss": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "missing sub", given: given{token: signed(t, vecCurrent, map[string]any{"sub": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "missing exp", given: given{token: signed(t, vecCurrent, map[string]any{"exp": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "missing nbf", given: given{token: signed(t, vecCurrent, map[string]any{"nbf": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "missing iat", given: given{token: signed(t, vecCurrent, map[string]any{"iat": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "missing jti", given: given{token: signed(t, vecCurrent, map[string]any{"jti": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "missing body", given: given{token: signed(t, vecCurrent, map[string]any{"body": nil})}, wantCheck: webhooks.CheckClaims},
		{name: "body claim numeric", given: given{token: signed(t, vecCurrent, map[string]any{"body": 42})}, wantCheck: webhooks.CheckClaims},
		{name: "jti numeric", given: given{token: signed(t, vecCurrent, map[string]any{"jti": 1.5})}, wantCheck: webhooks.CheckClaims},
		{name: "exp numeric string (NumericDate is a JSON number)", given: given{token: signed(t, vecCurrent, map[string]any{"exp": "1700000300"})}, wantCheck: webhooks.CheckClaims},
		{name: "exp fractional", given: given{token: signed(t, vecCurrent, map[string]any{"exp": 1700000300.5})}, wantKey: "current"},
		{name: "duplicate JSON after claims", given: given{token: rawJWT(vecCurrent, hs256Header, `{"iss":"Upstash"} {}`)}, wantCheck: webhooks.CheckClaims},
		{name: "exp not a number", given: given{token: signed(t, vecCurrent, map[string]any{"exp": "soon"})}, wantCheck: webhooks.CheckClaims},
		{name: "sub not a string", given: given{token: signed(t, vecCurrent, map[string]any{"sub": 1})}, wantCheck: webhooks.CheckClaims},
		{name: "claims not an object", given: given{token: rawJWT(vecCurrent, hs256Header, `["Upstash"]`)}, wantCheck: webhooks.CheckClaims},
		{name: "claims not JSON", given: given{token: rawJWT(vecCurrent, hs256Header, `hello`)}, wantCheck: webhooks.CheckClaims},

		// Structure.
		{name: "missing header", given: given{token: ""}, wantCheck: webhooks.CheckMissing},
		{name: "whitespace only", given: given{token: " "}, wantCheck: webhooks.CheckMalformed},
		{name: "two parts", given: given{token: strings.Join(strings.Split(vecV1, ".")[:2], ".")}, wantCheck: webhooks.CheckMalformed},
		{name: "four parts", given: given{token: vecV1 + ".x"}, wantCheck: webhooks.CheckMalformed},
		{name: "empty header segment", given: given{token: "." + strings.SplitN(vecV1, ".", 2)[1]}, wantCheck: webhooks.CheckMalformed},
		{name: "empty signature segment", given: given{token: strings.Join(strings.Split(vecV1, ".")[:2], ".") + "."}, wantCheck: webhooks.CheckMalformed},
		{name: "short signature", given: given{token: strings.Join(strings.Split(vecV1, ".")[:2], ".") + ".AAAA"}, wantCheck: webhooks.CheckMalformed},
		{name: "bad base64 char", given: given{token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9!" + vecV1[36:]}, wantCheck: webhooks.CheckMalformed},
		{name: "padded segment", given: given{token: vecV1 + "="}, wantCheck: webhooks.CheckMalformed},
		// Go's base64 decoders skip CR and LF, even strict ones: without the
		// alphabet check these were the genuine token under another spelling.
		{name: "newline in signature", given: given{token: vecV1[:len(vecV1)-4] + "\n" + vecV1[len(vecV1)-4:]}, wantCheck: webhooks.CheckMalformed},
		{name: "CRLF in payload", given: given{token: vecV1[:40] + "\r\n" + vecV1[40:]}, wantCheck: webhooks.CheckMalformed},
		{name: "std alphabet segment", given: given{token: strings.ReplaceAll(strings.ReplaceAll(vecV1, "-", "+"), "_", "/")}, wantCheck: webhooks.CheckMalformed},
		{name: "non-canonical trailing bits", given: given{token: vecV1[:len(vecV1)-1] + "5"}, wantCheck: webhooks.CheckMalformed},
		{name: "header not JSON", given: given{token: b64("alg=HS256") + "." + strings.SplitN(vecV1, ".", 2)[1]}, wantCheck: webhooks.CheckMalformed},
		{name: "header JSON array", given: given{token: rawJWT(vecCurrent, `["HS256"]`, payloadV1)}, wantCheck: webhooks.CheckMalformed},
		{name: "header with trailing garbage", given: given{token: rawJWT(vecCurrent, hs256Header+"x", payloadV1)}, wantCheck: webhooks.CheckMalformed},
		{name: "huge header", given: given{token: rawJWT(vecCurrent, `{"alg":"HS256","x":"`+strings.Repeat("a", webhooks.MaxQStashSignatureBytes)+`"}`, payloadV1)}, wantCheck: webhooks.CheckMalformed},
		{name: "JWS JSON serialization", given: given{token: `{"payload":"` + strings.Split(vecV1, ".")[1] + `","protected":"` + strings.Split(vecV1, ".")[0] + `","signature":"` + strings.Split(vecV1, ".")[2] + `"}`}, wantCheck: webhooks.CheckMalformed},
		{name: "leading space", given: given{token: " " + vecV1}, wantCheck: webhooks.CheckMalformed},
		{name: "Bearer prefix", given: given{token: "Bearer " + vecV1}, wantCheck: webhooks.CheckMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := tt.given
			if g.url == "" {
				g.url = vecURL
			} else if g.url == "-" {
				g.url = ""
			}
			if g.body == nil && !strings.HasPrefix(tt.name, "V4") {
				g.body = []byte(vecBody)
			}
			if g.now.IsZero() {
				g.now = vecNow
			}
			b := setupQStash(t, g.now)
			claims, err := b.v.Verify(context.Background(), g.token, g.url, g.body)

			result := "ok"
			if tt.wantCheck == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if claims.Key != tt.wantKey || claims.Subject != g.url || claims.ID == "" {
					t.Fatalf("claims = %+v, want key %q, subject %q", claims, tt.wantKey, g.url)
				}
				if got := counter(t, b.reg, "jobworker_webhook_signing_key_used_total", map[string]string{"source": "qstash", "key": tt.wantKey}); got != 1 {
					t.Errorf("key_used{%s} = %v, want 1", tt.wantKey, got)
				}
			} else {
				result = tt.wantCheck
				if !errors.Is(err, webhooks.ErrInvalidSignature) {
					t.Fatalf("Verify err = %v, want ErrInvalidSignature", err)
				}
				var ve *webhooks.VerificationError
				if !errors.As(err, &ve) || ve.Check != tt.wantCheck || ve.Source != "qstash" {
					t.Fatalf("Verify err = %v, want check %q", err, tt.wantCheck)
				}
				if claims != (webhooks.QStashClaims{}) {
					t.Errorf("claims returned on failure: %+v", claims)
				}
				// The error and the log name the check, never the token or body.
				logged := b.log.String()
				if !strings.Contains(logged, `"check":"`+tt.wantCheck+`"`) {
					t.Errorf("log %q lacks the check", logged)
				}
				for _, secret := range []string{vecCurrent, vecNext, vecBody, g.token} {
					if len(secret) > 4 && (strings.Contains(logged, secret) || strings.Contains(err.Error(), secret)) {
						t.Errorf("log or error leaks %q", secret)
					}
				}
			}
			if got := counter(t, b.reg, "jobworker_webhook_verifications_total", map[string]string{"source": "qstash", "result": result}); got != 1 {
				t.Errorf("verifications{%s} = %v, want 1", result, got)
			}
		})
	}
}

func TestNewQStashVerifierRefusesBadConfig(t *testing.T) {
	t.Parallel()
	ok := webhooks.QStashConfig{CurrentSigningKey: vecCurrent, NextSigningKey: vecNext}
	tests := []struct {
		name  string
		given func(c *webhooks.QStashConfig)
	}{
		{"empty current", func(c *webhooks.QStashConfig) { c.CurrentSigningKey = "" }},
		{"empty next", func(c *webhooks.QStashConfig) { c.NextSigningKey = "" }},
		{"blank current", func(c *webhooks.QStashConfig) { c.CurrentSigningKey = "   " }},
		{"tab next", func(c *webhooks.QStashConfig) { c.NextSigningKey = "\t" }},
		{"current with trailing newline", func(c *webhooks.QStashConfig) { c.CurrentSigningKey = vecCurrent + "\n" }},
		{"next with leading space", func(c *webhooks.QStashConfig) { c.NextSigningKey = " " + vecNext }},
		{"negative skew", func(c *webhooks.QStashConfig) { c.Skew = -time.Second }},
		{"skew longer than a token lives", func(c *webhooks.QStashConfig) { c.Skew = 6 * time.Minute }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.given(&cfg)
			v, err := webhooks.NewQStashVerifier(cfg)
			if err == nil || v != nil {
				t.Fatalf("NewQStashVerifier = %v, %v; want an error", v, err)
			}
			if cfg.Validate() == nil {
				t.Error("Validate accepted it")
			}
			if strings.Contains(err.Error(), vecCurrent) || strings.Contains(err.Error(), vecNext) {
				t.Errorf("error leaks a key: %v", err)
			}
		})
	}
	if _, err := webhooks.NewQStashVerifier(ok); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func TestQStashVerifiersShareARegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cfg := webhooks.QStashConfig{CurrentSigningKey: vecCurrent, NextSigningKey: vecNext, Registerer: reg, Now: func() time.Time { return vecNow }}
	v1, err := webhooks.NewQStashVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := webhooks.NewQStashVerifier(cfg)
	if err != nil {
		t.Fatalf("second verifier on the same registry: %v", err)
	}
	if _, err := webhooks.NewStripeVerifier(webhooks.StripeConfig{Secrets: []string{"whsec_x"}, Registerer: reg}); err != nil {
		t.Fatalf("stripe verifier on the same registry: %v", err)
	}
	for _, v := range []*webhooks.QStashVerifier{v1, v2} {
		if _, err := v.Verify(context.Background(), vecV1, vecURL, []byte(vecBody)); err != nil {
			t.Fatal(err)
		}
	}
	if got := counter(t, reg, "jobworker_webhook_verifications_total", map[string]string{"source": "qstash", "result": "ok"}); got != 2 {
		t.Fatalf("ok = %v, want 2", got)
	}
}

func TestQStashVerifyConcurrent(t *testing.T) {
	t.Parallel()
	b := setupQStash(t, vecNow)
	done := make(chan error)
	for i := range 8 {
		go func() {
			tok := vecV1
			if i%2 == 1 {
				tok = vecV2
			}
			var err error
			for range 50 {
				if _, err = b.v.Verify(context.Background(), tok, vecURL, []byte(vecBody)); err != nil {
					break
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
