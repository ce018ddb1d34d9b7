package manifest

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// These tests keep the JSON Schema and the Go parser from drifting apart. They check
// the schema's shape against the parser's own field lists, not by validating with a
// JSON Schema library.

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(Schema, &s); err != nil {
		t.Fatalf("schema is not valid JSON: %v", err)
	}
	return s
}

// at follows a path of object keys from v.
func at(t *testing.T, v any, path ...string) any {
	t.Helper()
	for i, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("schema: %s is not an object", strings.Join(path[:i], "/"))
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("schema: no %s", strings.Join(path[:i+1], "/"))
		}
	}
	return v
}

func keys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func strs(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

func TestSchemaHeader(t *testing.T) {
	s := loadSchema(t)
	if got := at(t, s, "$schema"); got != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v, want JSON Schema 2020-12", got)
	}
	if got := at(t, s, "additionalProperties"); got != false {
		t.Errorf("top-level additionalProperties = %v, want false", got)
	}
}

func TestSchemaMatchesParserFields(t *testing.T) {
	s := loadSchema(t)
	for _, fs := range allFieldSets {
		name := fs.name
		if name == "" {
			name = "(document)"
		}
		t.Run(name, func(t *testing.T) {
			obj := s
			if fs.name != "" {
				obj, _ = at(t, s, "$defs", fs.name).(map[string]any)
			}
			if got, want := keys(at(t, obj, "properties")), sorted(fs.known); !slices.Equal(got, want) {
				t.Errorf("schema properties %v, parser fields %v", got, want)
			}
			var req []string
			if r, ok := obj["required"]; ok {
				req = strs(r)
			}
			if got, want := req, sorted(fs.required); !slices.Equal(got, want) {
				t.Errorf("schema required %v, parser required %v", got, want)
			}
			if at(t, obj, "additionalProperties") != false {
				t.Errorf("schema allows unknown fields")
			}
		})
	}
}

func TestSchemaMatchesParserValues(t *testing.T) {
	s := loadSchema(t)
	for _, tc := range []struct {
		path []string
		want any
	}{
		{[]string{"properties", "apiVersion", "const"}, APIVersion},
		{[]string{"properties", "kind", "const"}, Kind},
		{[]string{"$defs", "approval", "properties", "on_timeout", "const"}, DefaultOnTimeout},
		{[]string{"$defs", "agent", "properties", "name", "pattern"}, agentNameRE.String()},
		{[]string{"$defs", "scope", "properties", "connectors", "propertyNames", "pattern"}, connectorNameRE.String()},
		{[]string{"$defs", "connector", "properties", "actions", "propertyNames", "pattern"}, actionNameRE.String()},
		{[]string{"$defs", "approval", "properties", "timeout", "default"}, formatDuration(DefaultApprovalTimeout)},
		{[]string{"$defs", "budget", "properties", "max_call_duration", "default"}, formatDuration(DefaultMaxCallDuration)},
		{[]string{"properties", "on_drift", "default"}, string(DefaultOnDrift)},
	} {
		if got := at(t, s, tc.path...); got != tc.want {
			t.Errorf("schema %s = %v, parser uses %v", strings.Join(tc.path, "/"), got, tc.want)
		}
	}
	for _, tc := range []struct {
		path []string
		want []string
	}{
		{[]string{"$defs", "action", "properties", "risk", "enum"},
			[]string{RiskLow.String(), RiskMedium.String(), RiskHigh.String()}},
		{[]string{"properties", "on_drift", "enum"},
			[]string{string(DriftRecord), string(DriftRequireApproval), string(DriftRefuse)}},
		{[]string{"$defs", "active_hours", "properties", "days", "items", "enum"}, dayNames[:]},
	} {
		if got, want := strs(at(t, s, tc.path...)), sorted(tc.want); !slices.Equal(got, want) {
			t.Errorf("schema %s = %v, parser uses %v", strings.Join(tc.path, "/"), got, want)
		}
	}
}

// TestSchemaCoversCanonicalExample walks the canonical example and checks that the
// schema knows every key in it, following $ref and additionalProperties.
func TestSchemaCoversCanonicalExample(t *testing.T) {
	s := loadSchema(t)
	var doc map[string]any
	if err := yaml.Unmarshal(readCanonical(t), &doc); err != nil {
		t.Fatal(err)
	}
	top := keys(at(t, s, "properties"))
	for k := range doc {
		if !slices.Contains(top, k) {
			t.Errorf("canonical example's top-level key %q is not in the schema", k)
		}
	}
	var walk func(v any, sch map[string]any, path string)
	walk = func(v any, sch map[string]any, path string) {
		if ref, ok := sch["$ref"].(string); ok {
			name, ok := strings.CutPrefix(ref, "#/$defs/")
			if !ok {
				t.Fatalf("%s: unexpected $ref %s", path, ref)
			}
			sch, _ = at(t, s, "$defs", name).(map[string]any)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		props, _ := sch["properties"].(map[string]any)
		for k, child := range m {
			if p, ok := props[k].(map[string]any); ok {
				walk(child, p, path+"."+k)
			} else if ap, ok := sch["additionalProperties"].(map[string]any); ok {
				walk(child, ap, path+"."+k)
			} else {
				t.Errorf("%s.%s: not in the schema", path, k)
			}
		}
	}
	walk(doc, s, "")
}
