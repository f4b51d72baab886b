package apiapp_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/digis/jobworker/internal/apiapp"
	"github.com/digis/jobworker/internal/appjobs"
	"github.com/digis/jobworker/internal/store"
)

// TestInvalidTextIs400 sends NUL bytes, control characters and invalid
// UTF-8 wherever the API takes text, on PostgreSQL (which refuses a NUL or
// invalid UTF-8 with SQLSTATE 22021, a 500 before validtext): every one is a
// 400 that names the field, and nothing is written.
func TestInvalidTextIs400(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	creator, fan := token(t, b.creator), token(t, b.fan)
	nulCreator := token(t, b.creator+"\x00")
	nulFan := token(t, "fan\x00x")
	start := func(tok, body string) answer {
		return req(t, http.MethodPost, b.api()+apiapp.StartRoute, body, "Authorization", bearer(tok))
	}
	for _, tc := range []struct {
		name   string
		given  func() answer
		detail string // in the problem's detail
	}{
		{"title with a NUL", func() answer { return start(creator, `{"username":"nul_title","title":"a\u0000b"}`) },
			"field title contains a NUL character"},
		{"title with a bell", func() answer { return start(creator, `{"username":"bel_title","title":"a\u0007b"}`) },
			"field title contains a control character (U+0007)"},
		{"title with a line break", func() answer { return start(creator, `{"username":"nl_title","title":"a\nb"}`) },
			"field title contains a control character (U+000A)"},
		{"body not UTF-8", func() answer { return start(creator, "{\"username\":\"utf_title\",\"title\":\"a\xffb\"}") },
			"the body is not valid UTF-8"},
		{"field name with a NUL", func() answer { return start(creator, `{"username":"k","ti\u0000tle":"x"}`) },
			"a field name contains a NUL character"},
		{"token sub with a NUL (start)", func() answer { return start(nulCreator, `{"username":"sub_nul","title":"x"}`) },
			"the token's sub claim contains a NUL character"},
		{"token sub with a NUL (tip)", func() answer { return b.tip(t, b.api(), nulFan, "k-nul", tipBody(b.stream.ID, 1)) },
			"the token's sub claim contains a NUL character"},
		{"token sub with a NUL (status)", func() answer {
			a, _ := b.status(t, b.api(), b.username, nulFan)
			return a
		}, "the token's sub claim contains a NUL character"},
		{"Idempotency-Key not UTF-8", func() answer { return b.tip(t, b.api(), fan, "k\xff", tipBody(b.stream.ID, 1)) },
			"Idempotency-Key"},
		{"username with a NUL", func() answer {
			return req(t, http.MethodGet, b.api()+apiapp.StatusRoute+"?username=ab%00c", "")
		}, "username"},
	} {
		a := tc.given()
		wantProblem(t, a, http.StatusBadRequest, tc.name)
		if !strings.Contains(a.body, tc.detail) {
			t.Errorf("%s: body %s, want detail %q", tc.name, a.body, tc.detail)
		}
	}
	if n := b.balance(t, b.fan); n != 1000 {
		t.Fatalf("fan balance %d after refused tips, want 1000", n)
	}
}

// TestTipCountKeysNeverCollide: a creator whose id needs hashing ({x}) and
// one whose id is the old encoding's hash of it ("h" and 32 hex digits) each
// get a tip; the worker's refresh-count jobs cache each creator's count under
// its own key. With the old encoding both counts shared one key, and one
// creator was shown the other's tips.
func TestTipCountKeysNeverCollide(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	sum := sha256.Sum256([]byte("{x}"))
	creators := map[string]int64{"{x}": 7, "h" + hex.EncodeToString(sum[:16]): 9}
	fan := token(t, b.fan)
	for id, amount := range creators {
		st, err := b.store.StartStream(ctx, store.StartStreamRequest{CreatorID: id, Username: "col_" + randHex(4), Title: "x"})
		if err != nil {
			t.Fatal(err)
		}
		wantProblem(t, b.tip(t, b.api(), fan, "k-"+randHex(4), tipBody(st.ID, amount)), http.StatusCreated, "tip "+id)
	}
	b.waitJob(t, "tips.refresh-count", 2)
	rdb := b.redis.Client(t)
	keys := map[string]bool{}
	for id, amount := range creators {
		key := "cache:" + appjobs.TipCountCacheKey(id)
		keys[key] = true
		if v := rdb.Get(ctx, key).Val(); !strings.Contains(v, `"sum":`+strconv.FormatInt(amount, 10)) {
			t.Errorf("creator %q: %s holds %q, want sum %d", id, key, v, amount)
		}
	}
	if len(keys) != 2 {
		t.Fatalf("two creators, keys %v", keys)
	}
}

// TestForgedTokensRateLimited: 300 forged bearer tokens from one address
// were 300 401s. Now the strict tier's 10 a minute are 401s, the rest 429
// with Retry-After; the same address's valid token still works, and a
// user's expired tokens are never counted (a NAT of stale sessions keeps
// its 401s, which clients answer by signing in again).
func TestForgedTokensRateLimited(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	fan := token(t, b.fan)
	forged := fan[:len(fan)-4] + "AAAA" // the fan's token, its signature changed
	past, err := jwt.NewBuilder().Subject(b.fan).IssuedAt(time.Now().Add(-2 * time.Hour)).Expiration(time.Now().Add(-time.Hour)).Build()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := jwt.Sign(past, jwt.WithKey(jwa.HS256, []byte(testSecret)))
	if err != nil {
		t.Fatal(err)
	}
	expired := string(signed)
	for i := 0; i < 30; i++ {
		a := req(t, http.MethodGet, b.api()+apiapp.StatusRoute+"?username="+b.username, "", "Authorization", bearer(expired))
		wantProblem(t, a, http.StatusUnauthorized, "expired token "+strconv.Itoa(i))
	}
	counts := map[int]int{}
	for i := 0; i < 300; i++ {
		tok := forged
		if i%2 == 1 {
			tok = "not-a-jwt"
		}
		a := b.tip(t, b.api(), tok, "k-forged", tipBody(b.stream.ID, 1))
		counts[a.status]++
		if a.status == http.StatusTooManyRequests && a.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if counts[http.StatusUnauthorized] != 10 || counts[http.StatusTooManyRequests] != 290 {
		t.Fatalf("300 forged tokens answered %v, want 10 401s and 290 429s", counts)
	}
	a, _ := b.status(t, b.api(), b.username, fan)
	wantProblem(t, a, http.StatusOK, "a valid token from the same address")
	wantProblem(t, b.tip(t, b.api(), fan, "k-valid", tipBody(b.stream.ID, 1)), http.StatusCreated, "a valid tip from the same address")
}
