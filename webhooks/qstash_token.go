package webhooks

import (
	"encoding/base64"
	"strings"
)

// MaxQStashSignatureBytes bounds the Upstash-Signature value. Real tokens are
// about 450 bytes plus the destination URL; anything this large is refused
// before any decoding or MAC work.
const MaxQStashSignatureBytes = 16 << 10

// qstashToken is an Upstash-Signature value whose structure has been checked
// but whose signature and claims have not. Only the verifier should trust it.
type qstashToken struct {
	// Alg and Typ are the protected header's fields (Alg is always "HS256"
	// in a token returned without error).
	Alg, Typ string
	// SigningInput is "<header>.<payload>", the bytes the MAC covers.
	SigningInput string
	// Payload is the decoded claims JSON.
	Payload []byte
	// Signature is the decoded MAC.
	Signature []byte
}

// b64 is strict: unpadded base64url with zero trailing bits, so there is one
// encoding per token (no malleable twins of a signed token). Even a strict
// decoder skips CR and LF, so parseQStashSignature first refuses any byte
// outside the alphabet (see compactJWSBytes).
var b64 = base64.RawURLEncoding.Strict()

// compactJWSBytes reports whether s holds only base64url letters and dots.
func compactJWSBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// parseQStashSignature checks the shape of an Upstash-Signature value: a
// compact JWS of exactly three canonical base64url segments, at most
// MaxQStashSignatureBytes long, whose protected header is a JSON object with
// alg "HS256", typ absent or "JWT", no crit or b64 extension, and a 32-byte
// signature. It does not
// verify anything. Errors are *VerificationError with Check missing,
// malformed or alg.
func parseQStashSignature(s string) (qstashToken, error) {
	var t qstashToken
	if s == "" {
		return t, newVerificationError(sourceQStash, CheckMissing, nil)
	}
	if len(s) > MaxQStashSignatureBytes || !compactJWSBytes(s) {
		return t, newVerificationError(sourceQStash, CheckMalformed, nil)
	}
	h, rest, ok := strings.Cut(s, ".")
	if !ok {
		return t, newVerificationError(sourceQStash, CheckMalformed, nil)
	}
	p, sig, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sig, ".") || h == "" || p == "" {
		return t, newVerificationError(sourceQStash, CheckMalformed, nil)
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return t, newVerificationError(sourceQStash, CheckMalformed, err)
	}
	if t.Payload, err = b64.DecodeString(p); err != nil {
		return t, newVerificationError(sourceQStash, CheckMalformed, err)
	}
	if t.Signature, err = b64.DecodeString(sig); err != nil {
		return t, newVerificationError(sourceQStash, CheckMalformed, err)
	}
	if len(hb) == 0 || hb[0] != '{' {
		return t, newVerificationError(sourceQStash, CheckMalformed, nil)
	}
	hdr, err := decodeQStashHeader(hb)
	if err != nil {
		return t, newVerificationError(sourceQStash, CheckMalformed, err)
	}
	// crit and b64 change how the token must be processed; QStash uses
	// neither, and accepting them would let jwx and this check disagree.
	if hdr.hasExt {
		return t, newVerificationError(sourceQStash, CheckMalformed, nil)
	}
	if hdr.hasTyp {
		if !strings.EqualFold(hdr.Typ, "JWT") {
			return t, newVerificationError(sourceQStash, CheckMalformed, nil)
		}
		t.Typ = hdr.Typ
	}
	// Pinned: jwx verifies with the algorithm we give it and ignores the
	// header's, so a token claiming none/HS512/RS256 is refused here.
	if !hdr.hasAlg || hdr.Alg != "HS256" {
		return t, newVerificationError(sourceQStash, CheckAlg, nil)
	}
	t.Alg = hdr.Alg
	if len(t.Signature) != 32 { // HMAC-SHA256; also refuses an empty signature
		return t, newVerificationError(sourceQStash, CheckMalformed, nil)
	}
	t.SigningInput = s[:len(h)+1+len(p)]
	return t, nil
}
