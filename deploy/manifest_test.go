package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// repoRoot is the module root; tests run in deploy/.
const repoRoot = ".."

// tagged is a YAML value carrying an application tag, such as
// CloudFormation's !Ref, !Sub or !GetAtt: its value is only known at deploy
// time.
type tagged struct {
	tag string
	val any
}

// manifestFiles lists every YAML and JSON file under deploy/ (testdata aside).
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml", ".json":
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// decodeFile returns every document of a YAML (or JSON) file as plain Go
// values: map[string]any, []any, string scalars and tagged values.
func decodeFile(path string) ([]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if filepath.Ext(path) == ".json" {
		var v any
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, errors.New("trailing data after the JSON value")
		}
		return []any{v}, nil
	}
	return decodeYAML(b)
}

func decodeYAML(b []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []any
	for {
		// A yaml.Node keeps unknown tags (!Ref, !Sub) instead of refusing them.
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		v, err := toAny(&n)
		if err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, v)
		}
	}
}

func toAny(n *yaml.Node) (any, error) {
	var v any
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return toAny(n.Content[0])
	case yaml.AliasNode:
		return toAny(n.Alias)
	case yaml.ScalarNode:
		v = n.Value
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			cv, err := toAny(c)
			if err != nil {
				return nil, err
			}
			s = append(s, cv)
		}
		v = s
	case yaml.MappingNode:
		m := map[string]any{}
		var merged []map[string]any
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			cv, err := toAny(val)
			if err != nil {
				return nil, err
			}
			if k.Value == "<<" && k.Tag == "!!merge" {
				switch mv := cv.(type) {
				case map[string]any:
					merged = append(merged, mv)
				case []any:
					for _, e := range mv {
						em, ok := e.(map[string]any)
						if !ok {
							return nil, fmt.Errorf("line %d: merge of a non-mapping", k.Line)
						}
						merged = append(merged, em)
					}
				default:
					return nil, fmt.Errorf("line %d: merge of a non-mapping", k.Line)
				}
				continue
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			m[k.Value] = cv
		}
		// Explicit keys win over merged ones, as YAML's merge key says.
		for _, mm := range merged {
			for k, val := range mm {
				if _, ok := m[k]; !ok {
					m[k] = val
				}
			}
		}
		v = m
	default:
		return nil, fmt.Errorf("line %d: unexpected YAML node kind %v", n.Line, n.Kind)
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		return tagged{tag: n.Tag, val: v}, nil
	}
	return v, nil
}

// get walks a path of map keys and sequence indexes ("spec", "template", 0).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	s, _ := get(v, path...).([]any)
	return s
}

func mapping(v any, path ...any) map[string]any {
	m, _ := get(v, path...).(map[string]any)
	return m
}

func TestManifestsParse(t *testing.T) {
	t.Parallel()
	files := manifestFiles(t)
	want := []string{
		"compose.yaml", "cloudrun/api.yaml", "cloudrun/worker.yaml", "cloudrun/migrate.yaml", "lambda/template.yaml",
		"kubernetes/base/api.yaml", "kubernetes/base/worker.yaml", "kubernetes/base/kustomization.yaml",
		"kubernetes/base/namespace.yaml", "kubernetes/secret.example.yaml",
		"kubernetes/dev/kustomization.yaml", "kubernetes/dev/qstash-dev.yaml",
	}
	for _, w := range want {
		if !contains(files, filepath.FromSlash(w)) {
			t.Errorf("%s is missing", w)
		}
	}
	for _, f := range files {
		t.Run(filepath.ToSlash(f), func(t *testing.T) {
			t.Parallel()
			docs, err := decodeFile(f)
			if err != nil {
				t.Fatalf("%s does not parse: %v", f, err)
			}
			if len(docs) == 0 {
				t.Fatalf("%s has no document", f)
			}
			for i, d := range docs {
				if _, ok := d.(map[string]any); !ok {
					t.Errorf("%s: document %d is a %T, want a mapping", f, i+1, d)
				}
				// Kubernetes-style documents name their kind and API version.
				if m := d.(map[string]any); m["kind"] != nil && str(m, "apiVersion") == "" {
					t.Errorf("%s: document %d (%v) has no apiVersion", f, i+1, m["kind"])
				}
				// Inline kustomize patches are YAML too.
				for _, p := range list(d, "patches") {
					if s := str(p, "patch"); s != "" {
						if _, err := decodeYAML([]byte(s)); err != nil {
							t.Errorf("%s: inline patch does not parse: %v", f, err)
						}
					}
				}
			}
		})
	}
}

func TestDecodeAcceptsCloudFormationTagsAndMerges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given string
		check func(t *testing.T, doc any)
	}{
		{"short-form tags", "a: !Ref P\nb: !GetAtt [R, Arn]\nc: !Sub 'x-${P}'\n", func(t *testing.T, doc any) {
			if tv, ok := get(doc, "a").(tagged); !ok || tv.tag != "!Ref" || tv.val != "P" {
				t.Fatalf("a = %#v", get(doc, "a"))
			}
			if tv, ok := get(doc, "b").(tagged); !ok || len(tv.val.([]any)) != 2 {
				t.Fatalf("b = %#v", get(doc, "b"))
			}
		}},
		{"merge keys, explicit wins", "x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  b: 3\n", func(t *testing.T, doc any) {
			if str(doc, "y", "a") != "1" || str(doc, "y", "b") != "3" {
				t.Fatalf("y = %#v", get(doc, "y"))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			docs, err := decodeYAML([]byte(tt.given))
			if err != nil || len(docs) != 1 {
				t.Fatalf("decode: %v (%d docs)", err, len(docs))
			}
			tt.check(t, docs[0])
		})
	}
	for _, bad := range []string{"a: 1\na: 2\n", "a: [1,\n", "- a\n b: c\n"} {
		if _, err := decodeYAML([]byte(bad)); err == nil {
			t.Errorf("decodeYAML(%q) accepted bad YAML", bad)
		}
	}
}

func contains(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

var upperName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
