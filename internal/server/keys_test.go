package server

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeInfo is a file's mode and group, as privateMode sees them.
type fakeInfo struct {
	fs.FileInfo
	mode fs.FileMode
	gid  uint32
}

func (f fakeInfo) Mode() fs.FileMode { return f.mode }
func (f fakeInfo) Sys() any          { return &syscall.Stat_t{Gid: f.gid} }

func TestPrivateMode(t *testing.T) {
	own := uint32(os.Getegid())
	other := uint32(4242424)
	for _, tc := range []struct {
		mode fs.FileMode
		gid  uint32
		ok   bool
	}{
		{0o600, other, true},
		{0o400, other, true},
		{0o440, own, true}, // a Kubernetes secret mounted for the pod's fsGroup
		{0o640, own, true},
		{0o640, other, false}, // a group this process is not in
		{0o604, own, false},
		{0o644, own, false},
		{0o444, own, false},
		{0o060, own, true},
	} {
		err := privateMode("f", fakeInfo{mode: tc.mode, gid: tc.gid})
		if (err == nil) != tc.ok {
			t.Errorf("mode %04o gid own=%v: err %v, want ok=%v", tc.mode, tc.gid == own, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "chmod 600 f") {
			t.Errorf("mode %04o: error %q does not say how to fix it", tc.mode, err)
		}
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	if b, err := ReadSecretFile(write("ok", "s3cret\n", 0o600)); err != nil || string(b) != "s3cret" {
		t.Errorf("ReadSecretFile = %q, %v; want s3cret", b, err)
	}
	for name, p := range map[string]string{
		"world-readable": write("loose", "s3cret", 0o644),
		"empty":          write("empty", " \n", 0o600),
		"too large":      write("large", strings.Repeat("x", 5000), 0o600),
		"missing":        filepath.Join(dir, "none"),
	} {
		b, err := ReadSecretFile(p)
		if err == nil {
			t.Errorf("%s: read %q", name, b)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
}

// TestKeyDir: keys made once by InitKeys serve a deployment from a key
// directory; the first start adopts its admin token and writes no key or
// token into the data directory; another key directory is refused by the
// same database; a missing key is named with the command that makes one.
func TestKeyDir(t *testing.T) {
	keys, data := filepath.Join(t.TempDir(), "keys"), filepath.Join(t.TempDir(), "data")
	if err := InitKeys(keys, ""); err == nil {
		t.Fatal("InitKeys without an origin succeeded")
	}
	if err := InitKeys(keys, "example.com/arx"); err != nil {
		t.Fatal(err)
	}
	if err := InitKeys(keys, "example.com/arx"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("InitKeys over existing keys: %v", err)
	}
	for _, name := range []string{LogKeyFile, CredentialKeyFile, AdminTokenFile} {
		fi, err := os.Stat(filepath.Join(keys, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v", name, err, fi.Mode())
		}
	}
	token, err := os.ReadFile(filepath.Join(keys, AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Open(t.Context(), Config{DataDir: data, KeyDir: keys, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if srv.AdminToken != "" {
		t.Error("the adopted admin token was handed out to print")
	}
	req, _ := http.NewRequest("GET", srv.URL+"/v1/agents", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the key directory's admin token: %s", resp.Status)
	}
	if srv.Runtime.Origin() != "example.com/arx" {
		t.Errorf("origin %q", srv.Runtime.Origin())
	}
	srv.Close()
	for _, name := range []string{LogKeyFile, LogPubFile, CredentialKeyFile, AdminTokenFile} {
		if _, err := os.Stat(filepath.Join(data, name)); err == nil {
			t.Errorf("%s was written to the data directory", name)
		}
	}

	other := filepath.Join(t.TempDir(), "other")
	if err := InitKeys(other, "example.com/arx"); err != nil {
		t.Fatal(err)
	}
	if srv, err := Open(t.Context(), Config{DataDir: data, KeyDir: other, Listen: "127.0.0.1:0"}); err == nil {
		srv.Close()
		t.Fatal("a database started with one key directory opened with another's keys")
	} else if !strings.Contains(err.Error(), "arx keys init") {
		t.Errorf("error %q does not say where the keys come from", err)
	}

	if err := os.Remove(filepath.Join(other, CredentialKeyFile)); err != nil {
		t.Fatal(err)
	}
	if srv, err := Open(t.Context(), Config{DataDir: t.TempDir(), KeyDir: other, Listen: "127.0.0.1:0"}); err == nil {
		srv.Close()
		t.Fatal("a key directory without its credential key was used")
	} else if !strings.Contains(err.Error(), CredentialKeyFile) || !strings.Contains(err.Error(), "arx keys init") {
		t.Errorf("error %q does not name the missing key and the command", err)
	}
	if _, err := os.Stat(filepath.Join(other, CredentialKeyFile)); err == nil {
		t.Error("a key was made in the key directory")
	}
}
