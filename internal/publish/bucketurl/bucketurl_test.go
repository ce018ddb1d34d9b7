package bucketurl

import (
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		url, want, err string
	}{
		{"file://" + dir, "file://" + dir, ""},
		{"s3://audit-bucket/arx/prod/", "s3://audit-bucket/arx/prod", ""},
		{"s3://audit-bucket", "s3://audit-bucket", ""},
		{"s3:///prefix", "", "no bucket name"},
		{"gs://bucket", "", "unknown scheme"},
		{"/just/a/path", "", "no scheme"},
		{"file://host/dir", "", "local directory"},
	} {
		b, err := Open(tc.url, Options{})
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Open(%q) = %v, want an error with %q", tc.url, err, tc.err)
		case tc.err == "" && (err != nil || b.String() != tc.want):
			t.Errorf("Open(%q) = %v, %v; want %s", tc.url, b, err, tc.want)
		}
	}
}
