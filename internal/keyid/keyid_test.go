package keyid_test

import (
	"strings"
	"testing"

	"github.com/digis/jobworker/internal/keyid"
)

func TestEncode(t *testing.T) {
	t.Parallel()
	hashed := keyid.Encode("{x}")
	for _, tc := range []struct {
		given string
		raw   bool
	}{
		{"creator-42", true}, {"msg_26hZCxZCuWyyTWPmSVBrNC1RADwpgWxPcak2rQD51EMjFMuzcW7qYXpPiDyw4Gd", true},
		{"a.b_c-D9", true}, {strings.Repeat("a", keyid.MaxRaw), true},
		{"", false}, {"{x}", false}, {"a:b", false}, {"fan@example.com", false}, {"a b", false},
		{strings.Repeat("a", keyid.MaxRaw+1), false}, {hashed, false}, {"~", false}, {"é", false},
	} {
		got := keyid.Encode(tc.given)
		if tc.raw != (got == tc.given) {
			t.Errorf("Encode(%q) = %q, want raw=%v", tc.given, got, tc.raw)
		}
		if !tc.raw && (!strings.HasPrefix(got, keyid.HashMark) || len(got) != 33) {
			t.Errorf("Encode(%q) = %q, want ~ and 32 hex digits", tc.given, got)
		}
		if strings.ContainsAny(got, "{}: ") {
			t.Errorf("Encode(%q) = %q holds a key delimiter", tc.given, got)
		}
	}
}

// TestHashedNeverEqualsRaw is the collision the old encoding had: the hash
// of an id that needs hashing, sent as a raw id, must not map to the same
// key.
func TestHashedNeverEqualsRaw(t *testing.T) {
	t.Parallel()
	h := keyid.Encode("{x}")
	if keyid.Encode(h) == h {
		t.Fatalf("the raw id %q maps to the key of {x}", h)
	}
	if keyid.Encode(strings.TrimPrefix(h, keyid.HashMark)) == h || keyid.Encode("h"+h[1:]) == h {
		t.Fatal("a raw spelling of the hash maps to the hashed key")
	}
}

// FuzzEncode: Encode is injective on what it keeps raw, and never yields a
// key delimiter.
func FuzzEncode(f *testing.F) {
	f.Add("creator-1", "{x}")
	f.Add(keyid.Encode("{x}"), "{x}")
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := keyid.Encode(a), keyid.Encode(b)
		if a != b && ea == eb {
			t.Fatalf("Encode(%q) = Encode(%q) = %q", a, b, ea)
		}
		if strings.ContainsAny(ea, "{}: \x00") || ea == "" {
			t.Fatalf("Encode(%q) = %q", a, ea)
		}
	})
}
