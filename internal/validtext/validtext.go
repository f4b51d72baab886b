// Package validtext is the one rule for text that comes from outside:
// request bodies, headers, token claims, ids. PostgreSQL refuses a NUL
// character and invalid UTF-8 (SQLSTATE 22021) and jsonb refuses \u0000
// (22P05), so such text must be refused at the edge with a 400, not turn
// into a 500 deep inside a transaction; control characters in a name, an id
// or a key are never meant and only serve to forge log lines or confuse a
// reader.
//
// Two strengths:
//
//   - Line: an id, a key, a name, a title. Valid UTF-8 and no control
//     characters at all (C0, DEL, C1).
//   - Text: free text that may span lines. Valid UTF-8, no NUL, no control
//     characters except tab, line feed and carriage return.
//
// JSON applies a rule to every string and object key of a document and names
// the field at fault by its path ("title", "items[2].name"). Errors are
// *Error values matching ErrInvalid.
package validtext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// ErrInvalid matches every *Error.
var ErrInvalid = errors.New("invalid text")

// Error says which field holds invalid text and what is wrong with it. Its
// message is safe to show the client: it never repeats the text.
type Error struct {
	// Field names the input ("title", "the Idempotency-Key header").
	Field string
	// Reason is what is wrong ("contains a NUL character").
	Reason string
}

func (e *Error) Error() string { return e.Field + " " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Rule checks one value; field names it in the error.
type Rule func(field, s string) error

// Line checks an id, a key, a name or a one-line label: valid UTF-8 and no
// control character (U+0000-U+001F, U+007F-U+009F).
func Line(field, s string) error { return check(field, s, false) }

// Text checks free text: valid UTF-8, no NUL and no control character other
// than tab, line feed and carriage return.
func Text(field, s string) error { return check(field, s, true) }

func check(field, s string, multiline bool) error {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !validAt(s, i):
			return &Error{Field: field, Reason: "is not valid UTF-8"}
		case r == 0:
			return &Error{Field: field, Reason: "contains a NUL character (U+0000)"}
		case multiline && (r == '\t' || r == '\n' || r == '\r'):
		case r < 0x20 || r >= 0x7f && r <= 0x9f:
			return &Error{Field: field, Reason: fmt.Sprintf("contains a control character (U+%04X)", r)}
		}
	}
	return nil
}

// validAt tells a real U+FFFD in s from the replacement range yields for
// a byte that is not UTF-8.
func validAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size == 3
}

// JSON checks every string and object key of the JSON document raw with
// rule, after checking the document itself is valid UTF-8 (encoding/json
// would quietly replace invalid bytes with U+FFFD). Malformed JSON is not
// reported here: the caller's decoder reports it with its own message, so
// JSON returns nil at the first syntax error.
func JSON(raw []byte, rule Rule) error {
	if !utf8.Valid(raw) {
		return &Error{Field: "the body", Reason: "is not valid UTF-8"}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var path pathStack
	for {
		tok, err := dec.Token()
		if err != nil { // io.EOF, or a syntax error the caller reports
			return nil
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				path.push(frame{object: true})
			case '[':
				path.push(frame{index: -1})
			default:
				path.pop()
				path.value()
			}
			continue
		case string:
			if path.expectsKey() {
				if err := rule(path.keyField(), v); err != nil {
					return err
				}
				path.setKey(v)
				continue
			}
			path.index()
			if err := rule(path.field(), v); err != nil {
				return err
			}
		default:
			path.index()
		}
		path.value()
	}
}

// frame is one level of the document being walked.
type frame struct {
	object bool
	key    string
	haveKy bool // key holds the current member's name
	index  int  // array position, -1 before the first element
}

type pathStack []frame

func (p *pathStack) push(f frame) {
	p.index()
	*p = append(*p, f)
}

func (p *pathStack) pop() {
	if n := len(*p); n > 0 {
		*p = (*p)[:n-1]
	}
}

// index advances the enclosing array to the element about to be read.
func (p pathStack) index() {
	if n := len(p); n > 0 && !p[n-1].object {
		p[n-1].index++
	}
}

// value marks the current object member as read, so the next string is a
// key again.
func (p pathStack) value() {
	if n := len(p); n > 0 && p[n-1].object {
		p[n-1].haveKy = false
	}
}

// expectsKey reports whether the next string token is an object key.
func (p pathStack) expectsKey() bool {
	n := len(p)
	return n > 0 && p[n-1].object && !p[n-1].haveKy
}

func (p pathStack) setKey(k string) {
	p[len(p)-1].key, p[len(p)-1].haveKy = k, true
}

// keyField names an object key under check by the path of its object.
func (p pathStack) keyField() string {
	parent := pathStack(p[:len(p)-1]).path()
	if parent == "" {
		return "a field name"
	}
	return "a field name in " + parent
}

// field names the value just read: "field title", "field items[2]".
func (p pathStack) field() string {
	if s := p.path(); s != "" {
		return "field " + s
	}
	return "the body"
}

func (p pathStack) path() string {
	var b []byte
	for _, f := range p {
		switch {
		case f.object && f.haveKy:
			if len(b) > 0 {
				b = append(b, '.')
			}
			b = append(b, f.key...)
		case !f.object && f.index >= 0:
			b = append(b, '[')
			b = strconv.AppendInt(b, int64(f.index), 10)
			b = append(b, ']')
		}
	}
	return string(b)
}
