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
	"github.com/arxsec/arx/internal/publish/publishtest"
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

	t.Run("witnessed", func(t *testing.T) {
		if testing.Short() {
			t.Skip("starts a witness process")
		}
		bucket, err := file.New(filepath.Join(t.TempDir(), "bucket"))
		if err != nil {
			t.Fatal(err)
		}
		data := t.TempDir()
		w := publishtest.StartWitness(t, "w.dashboard.test", publishtest.LogKey(t, data, "arx.test/dashboard"))
		s := arxtest.StartWith(t, data, func(c *server.Config) {
			c.Publish = &publish.Config{Bucket: bucket, PublishInterval: 20 * time.Millisecond, WitnessInterval: 20 * time.Millisecond,
				Witnesses: []publish.Witness{{URL: w.URL, VKey: w.VKey}}}
		})
		addManager(t, s, "boss@example.com")
		b := newBrowser(t, s)
		b.mustLogin("boss@example.com")
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			body := b.get("/console/").Body
			if strings.Contains(body, "1 of 1 witness") && strings.Contains(body, "<code>w.dashboard.test</code> <span class=\"muted\">cosigned ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the dashboard does not show the checkpoint's witness:\n%s", body)
			}
		}
	})
}
