package webhooks_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/digis/jobworker/webhooks"
)

// The token's claims and header are read by a small strict decoder, not
// encoding/json. These targets check it against encoding/json:
//
//   - whatever it accepts, encoding/json accepts too, with the same values
//     for the members it knows (it refuses a subset: exact member names, no
//     duplicates, no exponents, no invalid UTF-8 or lone surrogates);
//
//   - whatever encoding/json writes for a claim set, it reads back exactly.
//
//     go test -run='^$' -fuzz='^FuzzQStashJSON$' -fuzztime=10s ./webhooks
//     go test -run='^$' -fuzz='^FuzzQStashClaimsRoundTrip$' -fuzztime=10s ./webhooks
func FuzzQStashJSON(f *testing.F) {
	for _, s := range []string{
		`{"iss":"Upstash","sub":"https://example.com/api/webhook","exp":1700000300,"nbf":0,"iat":1700000000,"jti":"jwt_1","body":"abc="}`,
		`{"alg":"HS256","typ":"JWT"}`,
		`{"alg":null,"typ":null,"kid":{"a":[1,2.5e3,true,false,null,"x"]}}`,
		`{"iss":"\u0055pstash","sub":"a\/b\n\ud83d\ude00","exp":1.9,"nbf":-0,"iat":1e3}`,
		`{"iss":"a","iss":"b"}`, `{"ISS":"a"}`, `{"crit":[]}`, `{"b64":false}`, ` { } `, `{}x`, `{"a":01}`,
		`{"s":"\ud800"}`, "{\"s\":\"\xff\"}", `{"n":99999999999999999999}`, `[]`, `{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, cok := webhooks.DecodeQStashClaimsForTest(b)
		h, hok := webhooks.DecodeQStashHeaderForTest(b)
		if !cok && !hok {
			return
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("decoder accepted %q, encoding/json refuses it: %v", b, err)
		}
		str := func(name string) (string, bool) {
			raw, ok := m[name]
			if !ok {
				return "", false
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("decoder accepted %q whose %s is %s", b, name, raw)
			}
			return s, true
		}
		num := func(name string) (int64, bool) {
			raw, ok := m[name]
			if !ok {
				return 0, false
			}
			whole, _, _ := strings.Cut(string(raw), ".")
			n, err := strconv.ParseInt(whole, 10, 64)
			if err != nil {
				t.Fatalf("decoder accepted %q whose %s is %s", b, name, raw)
			}
			return n, true
		}
		if cok {
			all := true
			for name, got := range map[string]string{"iss": c.Iss, "sub": c.Sub, "jti": c.Jti, "body": c.Body} {
				want, ok := str(name)
				all = all && ok
				if want != got {
					t.Fatalf("%q: %s = %q, encoding/json reads %q", b, name, got, want)
				}
			}
			for name, got := range map[string]int64{"exp": c.Exp, "nbf": c.Nbf, "iat": c.Iat} {
				want, ok := num(name)
				all = all && ok
				if want != got {
					t.Fatalf("%q: %s = %d, encoding/json reads %d", b, name, got, want)
				}
			}
			if all != c.HasAll {
				t.Fatalf("%q: all claims present = %v, encoding/json finds %v", b, c.HasAll, all)
			}
		}
		if hok {
			for name, p := range map[string]struct {
				got string
				has bool
			}{"alg": {h.Alg, h.HasAlg}, "typ": {h.Typ, h.HasTyp}} {
				if raw, ok := m[name]; ok && bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
					if p.has {
						t.Fatalf("%q: %s null read as present", b, name)
					}
					continue
				}
				want, ok := str(name)
				if ok != p.has || want != p.got {
					t.Fatalf("%q: %s = %q (%v), encoding/json reads %q (%v)", b, name, p.got, p.has, want, ok)
				}
			}
			_, crit := m["crit"]
			_, b64 := m["b64"]
			if h.HasExt != (crit || b64) {
				t.Fatalf("%q: crit/b64 = %v, encoding/json finds %v", b, h.HasExt, crit || b64)
			}
		}
	})
}

func FuzzQStashClaimsRoundTrip(f *testing.F) {
	f.Add("Upstash", "https://example.com/api/webhook?a=1&b=<2>", "jwt_1", "abc=", int64(1700000300), int64(0), int64(1700000000), "extra")
	f.Add("\x00\xff", "\u2028\"\\", "\U0001F600", "", int64(-1), int64(1<<62), int64(0), "")
	f.Fuzz(func(t *testing.T, iss, sub, jti, body string, exp, nbf, iat int64, extra string) {
		b, err := json.Marshal(map[string]any{"iss": iss, "sub": sub, "jti": jti, "body": body,
			"exp": exp, "nbf": nbf, "iat": iat, "x-" + extra: []any{extra, 1.5, nil, map[string]any{"k": true}}})
		if err != nil {
			t.Skip()
		}
		c, ok := webhooks.DecodeQStashClaimsForTest(b)
		if !ok || !c.HasAll {
			t.Fatalf("refused %s", b)
		}
		// encoding/json writes invalid UTF-8 as U+FFFD; compare with what it reads back.
		var want struct{ Iss, Sub, Jti, Body string }
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if c.Iss != want.Iss || c.Sub != want.Sub || c.Jti != want.Jti || c.Body != want.Body ||
			c.Exp != exp || c.Nbf != nbf || c.Iat != iat {
			t.Fatalf("read %+v from %s", c, b)
		}
	})
}
