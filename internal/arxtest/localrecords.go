package arxtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// LocalRecordTypes counts, by type, the entries local-only mode wrote to
// the .jsonl files of dir (arx-records/); a line that is not JSON fails t.
func LocalRecordTypes(t testing.TB, dir string) map[string]int {
	t.Helper()
	types := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			var e struct {
				Type string `json:"type"`
			}
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			types[e.Type]++
		}
	}
	return types
}
