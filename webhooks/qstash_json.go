package webhooks

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// A small, strict JSON reader for the two fixed objects of a QStash token:
// its protected header and its claim set. encoding/json's reflection cost
// about half of a delivery's verification (measured on the worker's path),
// for seven known members. It accepts a subset of what encoding/json
// accepts and refuses, rather than repairs, everything else:
//
//   - exactly one JSON object, with white space around tokens and nothing
//     after it;
//   - member names match exactly (encoding/json also matches them
//     case-insensitively); a known member given twice is refused (encoding/json
//     keeps the last);
//   - strings must be valid UTF-8 without raw control characters, escapes
//     are decoded (a lone surrogate is refused, not replaced with U+FFFD);
//   - numbers are integers, an optional fraction dropped (whole seconds, as
//     NumericDate is checked), no exponent, within int64;
//   - unknown members are skipped whatever their value, nested at most
//     maxJSONDepth deep.
//
// FuzzQStashJSON checks it against encoding/json.

// errJSON is every refusal; the verifier reports it as its check (claims
// or malformed), never the detail.
var errJSON = errors.New("webhooks: unexpected JSON in token")

const maxJSONDepth = 32

type jsonReader struct {
	b []byte
	i int
}

func (r *jsonReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, 0 at the end.
func (r *jsonReader) peek() byte {
	r.space()
	if r.i >= len(r.b) {
		return 0
	}
	return r.b[r.i]
}

func (r *jsonReader) expect(c byte) error {
	if r.peek() != c {
		return errJSON
	}
	r.i++
	return nil
}

// object reads one object, calling member for each member name with the
// reader positioned at its value; member must consume the value.
func (r *jsonReader) object(member func(name string) error) error {
	if err := r.expect('{'); err != nil {
		return err
	}
	if r.peek() == '}' {
		r.i++
		return nil
	}
	for {
		if r.peek() != '"' {
			return errJSON
		}
		name, err := r.str()
		if err != nil {
			return err
		}
		if err := r.expect(':'); err != nil {
			return err
		}
		r.space()
		if err := member(name); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return nil
		default:
			return errJSON
		}
	}
}

// end succeeds when only white space is left.
func (r *jsonReader) end() error {
	r.space()
	if r.i != len(r.b) {
		return errJSON
	}
	return nil
}

// str reads a string value.
func (r *jsonReader) str() (string, error) {
	if r.peek() != '"' {
		return "", errJSON
	}
	r.i++
	start := r.i
	// Fast path: no escapes.
	for r.i < len(r.b) {
		c := r.b[r.i]
		if c == '"' {
			raw := r.b[start:r.i]
			if !utf8.Valid(raw) {
				return "", errJSON
			}
			r.i++
			return string(raw), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", errJSON
		}
		r.i++
	}
	out := append([]byte(nil), r.b[start:r.i]...)
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return "", errJSON
			}
			r.i++
			return string(out), nil
		case c < 0x20:
			return "", errJSON
		case c != '\\':
			out = append(out, c)
			r.i++
			continue
		}
		if r.i+1 >= len(r.b) {
			return "", errJSON
		}
		e := r.b[r.i+1]
		r.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			x, ok := r.hex4()
			if !ok {
				return "", errJSON
			}
			if utf16.IsSurrogate(x) {
				// Only a high surrogate followed by an escaped low one.
				if r.i+1 >= len(r.b) || r.b[r.i] != '\\' || r.b[r.i+1] != 'u' {
					return "", errJSON
				}
				r.i += 2
				y, ok := r.hex4()
				if !ok {
					return "", errJSON
				}
				x = utf16.DecodeRune(x, y)
				if x == utf8.RuneError {
					return "", errJSON
				}
			}
			out = utf8.AppendRune(out, x)
		default:
			return "", errJSON
		}
	}
	return "", errJSON
}

func (r *jsonReader) hex4() (rune, bool) {
	if r.i+4 > len(r.b) {
		return 0, false
	}
	var x rune
	for _, c := range r.b[r.i : r.i+4] {
		x <<= 4
		switch {
		case '0' <= c && c <= '9':
			x |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			x |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			x |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	r.i += 4
	return x, true
}

// integer reads a number with no exponent and returns its whole part.
func (r *jsonReader) integer() (int64, error) {
	r.space()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := r.i
	for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
		r.i++
	}
	n := r.i - digits
	if n == 0 || (n > 1 && r.b[digits] == '0') {
		return 0, errJSON
	}
	whole := r.b[start:r.i]
	if r.i < len(r.b) && r.b[r.i] == '.' {
		r.i++
		f := r.i
		for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
			r.i++
		}
		if r.i == f {
			return 0, errJSON
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		return 0, errJSON
	}
	v, err := strconv.ParseInt(string(whole), 10, 64)
	if err != nil {
		return 0, errJSON
	}
	return v, nil
}

// null consumes a null literal if one is next.
func (r *jsonReader) null() bool {
	r.space()
	if len(r.b)-r.i >= 4 && string(r.b[r.i:r.i+4]) == "null" {
		r.i += 4
		return true
	}
	return false
}

// skip consumes any one JSON value.
func (r *jsonReader) skip(depth int) error {
	if depth > maxJSONDepth {
		return errJSON
	}
	switch c := r.peek(); {
	case c == '"':
		_, err := r.str()
		return err
	case c == '{':
		return r.object(func(string) error { return r.skip(depth + 1) })
	case c == '[':
		r.i++
		if r.peek() == ']' {
			r.i++
			return nil
		}
		for {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			switch r.peek() {
			case ',':
				r.i++
			case ']':
				r.i++
				return nil
			default:
				return errJSON
			}
		}
	case c == '-' || ('0' <= c && c <= '9'):
		return r.number()
	}
	for _, lit := range []string{"true", "false", "null"} {
		if len(r.b)-r.i >= len(lit) && string(r.b[r.i:r.i+len(lit)]) == lit {
			r.i += len(lit)
			return nil
		}
	}
	return errJSON
}

// number consumes any JSON number (for skipped members).
func (r *jsonReader) number() error {
	if r.b[r.i] == '-' {
		r.i++
	}
	digits := func() int {
		s := r.i
		for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
			r.i++
		}
		return r.i - s
	}
	s := r.i
	if n := digits(); n == 0 || (n > 1 && r.b[s] == '0') {
		return errJSON
	}
	if r.i < len(r.b) && r.b[r.i] == '.' {
		r.i++
		if digits() == 0 {
			return errJSON
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		r.i++
		if r.i < len(r.b) && (r.b[r.i] == '+' || r.b[r.i] == '-') {
			r.i++
		}
		if digits() == 0 {
			return errJSON
		}
	}
	return nil
}

// qstashClaimSet is the claim set QStash signs. Every member is required
// (have records which were present); a claim of the wrong JSON type fails
// the decode.
type qstashClaimSet struct {
	Iss, Sub, Jti, Body string
	Exp, Nbf, Iat       int64 // NumericDate, whole seconds
	have                uint8
}

const (
	claimIss = 1 << iota
	claimSub
	claimExp
	claimNbf
	claimIat
	claimJti
	claimBody
	claimAll = 1<<iota - 1
)

// decodeQStashClaims reads the token's claims JSON (see the rules above).
func decodeQStashClaims(b []byte) (qstashClaimSet, error) {
	var c qstashClaimSet
	r := jsonReader{b: b}
	err := r.object(func(name string) error {
		var bit uint8
		var s *string
		var n *int64
		switch name {
		case "iss":
			bit, s = claimIss, &c.Iss
		case "sub":
			bit, s = claimSub, &c.Sub
		case "jti":
			bit, s = claimJti, &c.Jti
		case "body":
			bit, s = claimBody, &c.Body
		case "exp":
			bit, n = claimExp, &c.Exp
		case "nbf":
			bit, n = claimNbf, &c.Nbf
		case "iat":
			bit, n = claimIat, &c.Iat
		default:
			return r.skip(1)
		}
		if c.have&bit != 0 {
			return errJSON
		}
		c.have |= bit
		var err error
		if s != nil {
			*s, err = r.str()
		} else {
			*n, err = r.integer()
		}
		return err
	})
	if err == nil {
		err = r.end()
	}
	if err != nil {
		return qstashClaimSet{}, err
	}
	return c, nil
}

// qstashHeader is a token's protected header as the parser needs it.
type qstashHeader struct {
	Alg, Typ       string
	hasAlg, hasTyp bool // present and not null
	hasExt         bool // crit or b64 is present, with any value
}

// decodeQStashHeader reads the protected header JSON. alg or typ given as
// null counts as absent (encoding/json decoded it into a nil pointer);
// either given twice is refused.
func decodeQStashHeader(b []byte) (qstashHeader, error) {
	var h qstashHeader
	var seen uint8
	r := jsonReader{b: b}
	err := r.object(func(name string) error {
		var bit uint8
		var s *string
		var has *bool
		switch name {
		case "alg":
			bit, s, has = 1, &h.Alg, &h.hasAlg
		case "typ":
			bit, s, has = 2, &h.Typ, &h.hasTyp
		case "crit", "b64":
			h.hasExt = true
			return r.skip(1)
		default:
			return r.skip(1)
		}
		if seen&bit != 0 {
			return errJSON
		}
		seen |= bit
		if r.null() {
			return nil
		}
		var err error
		*s, err = r.str()
		*has = true
		return err
	})
	if err == nil {
		err = r.end()
	}
	if err != nil {
		return qstashHeader{}, err
	}
	return h, nil
}
