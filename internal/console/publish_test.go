package console_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/server"
)

// The dashboard shows how far the record got in the bucket, and only when
// a bucket is configured.
func TestDashboardPublishing(t *testing.T) {
	t.Run("no bucket", func(t *testing.T) {
		s := arxtest.Start(t)
		addManager(t, s, "boss@example.com")
		b := newBrowser(t, s)
		b.mustLogin("boss@example.com")
		p := b.get("/console/")
		if p.Status != http.StatusOK || !strings.Contains(p.Body, "<h1>Dashboard</h1>") {
			t.Fatalf("dashboard: %d\n%s", p.Status, p.Body)
		}
		if strings.Contains(p.Body, "Personnel record publishing") {
			t.Fatalf("the publishing card shows without a bucket:\n%s", p.Body)
		}
	})

	t.Run("file bucket", func(t *testing.T) {
		bucket, err := file.New(filepath.Join(t.TempDir(), "bucket"))
		if err != nil {
			t.Fatal(err)
		}
		s := arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
			c.Publish = &publish.Config{Bucket: bucket, PublishInterval: 20 * time.Millisecond}
		})
		addManager(t, s, "boss@example.com")
		b := newBrowser(t, s)
		b.mustLogin("boss@example.com")

		var body string
		for deadline := time.Now().Add(10 * time.Second); ; {
			p := b.get("/console/")
			if p.Status != http.StatusOK {
				t.Fatalf("dashboard: %d\n%s", p.Status, p.Body)
			}
			body = p.Body
			if !strings.Contains(body, "Personnel record publishing") || !strings.Contains(body, "<code>"+bucket.String()+"</code>") {
				t.Fatalf("no publishing card with the bucket:\n%s", body)
			}
			if strings.Contains(body, "<dt>Last checkpoint</dt><dd>Published ") && strings.Contains(body, `<dt>Waiting to upload</dt><dd><span class="muted">None</span>`) {
				break // a checkpoint is published, nothing waits
			}
			if time.Now().After(deadline) {
				t.Fatalf("no checkpoint published on the dashboard:\n%s", body)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if strings.Contains(body, "alert-warn") {
			t.Fatalf("publishing reads as failing:\n%s", body)
		}
	})
}
