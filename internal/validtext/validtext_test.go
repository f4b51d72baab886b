package validtext_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/digis/jobworker/internal/validtext"
)

func TestLineAndText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given      string
		line, text string // want: "" for valid, else the reason's start
	}{
		{given: "Friday night stream ✨", line: "", text: ""},
		{given: "a real \uFFFD is fine", line: "", text: ""},
		{given: "a\x00b", line: "contains a NUL", text: "contains a NUL"},
		{given: "a\xffb", line: "is not valid UTF-8", text: "is not valid UTF-8"},
		{given: "\xed\xa0\x80", line: "is not valid UTF-8", text: "is not valid UTF-8"}, // a surrogate
		{given: "two\nlines", line: "contains a control character (U+000A)", text: ""},
		{given: "tab\there", line: "contains a control character (U+0009)", text: ""},
		{given: "bell\a", line: "contains a control character (U+0007)", text: "contains a control character (U+0007)"},
		{given: "del\x7f", line: "contains a control character (U+007F)", text: "contains a control character (U+007F)"},
		{given: "c1\u0085", line: "contains a control character (U+0085)", text: "contains a control character (U+0085)"},
	} {
		for rule, want := range map[string]string{"line": tc.line, "text": tc.text} {
			f := validtext.Line
			if rule == "text" {
				f = validtext.Text
			}
			err := f("title", tc.given)
			switch {
			case want == "" && err != nil:
				t.Errorf("%s(%q) = %v, want nil", rule, tc.given, err)
			case want != "" && (!errors.Is(err, validtext.ErrInvalid) || !strings.HasPrefix(err.Error(), "title "+want)):
				t.Errorf("%s(%q) = %v, want title %s…", rule, tc.given, err, want)
			}
		}
	}
}

func TestJSONNamesTheField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		given, want string // want "" for nil
	}{
		{given: `{"username":"chan_1","title":"ok"}`},
		{given: `{"username":"chan_1","title":"a\u0000b"}`, want: "field title contains a NUL character (U+0000)"},
		{given: `{"a":{"b":[1,"x","y\u0007"]}}`, want: "field a.b[2] contains a control character (U+0007)"},
		{given: `{"a":[{"k":1},{"k":"\u0000"}]}`, want: "field a[1].k contains a NUL character (U+0000)"},
		{given: `{"ti\u0000tle":"x"}`, want: "a field name contains a NUL character (U+0000)"},
		{given: `{"a":{"\u0001":1}}`, want: "a field name in a contains a control character (U+0001)"},
		{given: "{\"title\":\"a\xffb\"}", want: "the body is not valid UTF-8"},
		{given: `["\u0000"]`, want: "field [0] contains a NUL character (U+0000)"},
		{given: `"\u0000"`, want: "the body contains a NUL character (U+0000)"},
		{given: `{"title":"a\u0000b"`, want: "field title contains a NUL character (U+0000)"}, // checked before the syntax error
		{given: `{"title":`}, // malformed: the decoder's to report
		{given: `{"a":1,"b":2} {"c":"\u0000"}`, want: "field c contains a NUL character (U+0000)"},
	} {
		err := validtext.JSON([]byte(tc.given), validtext.Line)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("JSON(%s) = %q, want %q", tc.given, got, tc.want)
		}
	}
}

// FuzzJSON: JSON never panics, and a document it accepts holds no string
// that Line refuses.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`{"title":"a\u0000b"}`, `{"a":[1,{"b":"c"}]}`, "{\"\xff\":1}", `[[["x"]]]`, `{"a":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := validtext.JSON(raw, validtext.Line)
		if err != nil {
			if !errors.Is(err, validtext.ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if !utf8.Valid(raw) {
			t.Fatalf("accepted invalid UTF-8 %q", raw)
		}
		var v any
		if json.Unmarshal(raw, &v) != nil {
			return
		}
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case string:
				if validtext.Line("x", v) != nil {
					t.Fatalf("accepted %q holding %q", raw, v)
				}
			case []any:
				for _, e := range v {
					walk(e)
				}
			case map[string]any:
				for k, e := range v {
					walk(k)
					walk(e)
				}
			}
		}
		walk(v)
	})
}
