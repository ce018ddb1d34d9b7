package ociimage

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// build builds the image for this machine's architecture.
func build(t *testing.T) v1.ImageIndex {
	t.Helper()
	if _, err := os.Stat(DefaultCABundle); err != nil {
		t.Skipf("no CA bundle at %s (Debian's ca-certificates): %v", DefaultCABundle, err)
	}
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := Build(t.Context(), Config{Source: src, Platforms: []string{"linux/" + goruntime.GOARCH},
		Created: time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), Version: "test", Revision: "0123abc"})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

func only(t *testing.T, idx v1.ImageIndex) v1.Image {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Platform == nil || m.Manifests[0].Platform.Architecture != goruntime.GOARCH {
		t.Fatalf("index manifests: %+v", m.Manifests)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImage builds the image twice (the same digest), checks how it runs,
// pushes it to a registry on loopback and reads it back, and runs arx from
// its filesystem as its user would: non-root, writing only its data
// directory.
func TestImage(t *testing.T) {
	a, b := build(t), build(t)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of the same sources differ: %s and %s", da, db)
	}
	// What is written is a valid OCI image layout: digests, sizes and
	// diff IDs all agree.
	dir := t.TempDir()
	if _, err := layout.Write(dir, a); err != nil {
		t.Fatal(err)
	}
	onDisk, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(onDisk); err != nil {
		t.Fatalf("the OCI layout written is not valid: %v", err)
	}
	img := only(t, a)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != fmt.Sprintf("%d:%d", UID, UID) || strings.HasPrefix(c.User, "0") || c.User == "" {
		t.Errorf("the image runs as %q, not the non-root user", c.User)
	}
	if len(c.Entrypoint) != 1 || c.Entrypoint[0] != Binary || len(c.Cmd) == 0 || c.Cmd[0] != "serve" {
		t.Errorf("entrypoint %q cmd %q", c.Entrypoint, c.Cmd)
	}
	src, _ := filepath.Abs("../..")
	tc, err := Toolchain(src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Labels["dev.arx.image.go-version"] != tc || len(c.Labels["dev.arx.image.ca-bundle.sha256"]) != 64 {
		t.Errorf("the labels do not name the toolchain and the CA bundle: %v", c.Labels)
	}
	if c.Labels["org.opencontainers.image.revision"] != "0123abc" || !cf.Created.Time.Equal(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("labels %v created %v", c.Labels, cf.Created)
	}

	// A registry on loopback: push the index, pull the image by tag.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://")+"/arx:test", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, a, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, remote.WithContext(t.Context()), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if got, _ := pulled.Digest(); got != want {
		t.Errorf("pulled %s, pushed %s", got, want)
	}

	root := t.TempDir()
	if err := extract(img, root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{Binary, "/etc/passwd", "/etc/ssl/certs/ca-certificates.crt", "/tmp", DataDir} {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("the image lacks %s: %v", p, err)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "" {
			t.Fatal("running arx in the image's filesystem as its user needs root (chroot), and ARX_TEST_REQUIRE_SERVERS is set")
		}
		t.Skip("running arx in the image's filesystem as its user needs root (chroot); run as root to check it")
	}
	// As the image's user, in its filesystem: the root is not writable,
	// the data directory is, and arx serves.
	inImage := func(args ...string) *exec.Cmd {
		cmd := exec.Command(Binary, args...)
		cmd.Env = c.Env
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: UID, Gid: UID}}
		return cmd
	}
	if out, err := inImage("keys", "init", "/etc/arx-keys", "--origin", "example.com/arx").CombinedOutput(); err == nil {
		t.Errorf("the image's user wrote outside the data directory:\n%s", out)
	} else if !strings.Contains(string(out), "permission denied") {
		t.Errorf("keys init outside the data directory: %v\n%s", err, out)
	}
	if out, err := inImage("keys", "init", DataDir+"/keys", "--origin", "example.com/arx").CombinedOutput(); err != nil {
		t.Fatalf("keys init in the data directory: %v\n%s", err, out)
	}
	srv := inImage("serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data", DataDir+"/data", "--key-dir", DataDir+"/keys")
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	}()
	log := arxtest.WatchServe(stderr)
	select {
	case url := <-log.URL():
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("arx in the image: /healthz %s\n%s", resp.Status, log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("arx in the image did not serve within 30s:\n%s", log.String())
	}
	fi, err := os.Stat(filepath.Join(root, DataDir, "data", "arx.db"))
	if err != nil {
		t.Fatalf("no database in the data directory: %v\n%s", err, log.String())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != UID {
		t.Errorf("the database is owned by %d, not the image's user", st.Uid)
	}
}

// extract unpacks the image's filesystem into dir, with its owners and
// modes.
func extract(img v1.Image, dir string) error {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			// Extract gives the top layer first: a file may come before
			// its directory.
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				return err
			}
		}
		if err := os.Chmod(p, os.FileMode(h.Mode).Perm()|modeBits(h.Mode)); err != nil {
			return err
		}
	}
}

func modeBits(m int64) os.FileMode {
	var b os.FileMode
	if m&0o1000 != 0 {
		b |= os.ModeSticky
	}
	return b
}
