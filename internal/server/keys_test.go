package server

import (
	"encoding/binary"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arxsec/arx/internal/logbuf"
)

// fakeInfo is a file's mode and owners, as privateMode sees them.
type fakeInfo struct {
	fs.FileInfo
	mode     fs.FileMode
	uid, gid uint32
}

func (f fakeInfo) Mode() fs.FileMode { return f.mode }
func (f fakeInfo) Sys() any          { return &syscall.Stat_t{Uid: f.uid, Gid: f.gid} }

func TestPrivateMode(t *testing.T) {
	me, own := uint32(os.Geteuid()), uint32(os.Getegid())
	root, other := uint32(4242421), uint32(4242424) // another account (root, say), another group
	if me == 0 {
		root = 65534
	}
	for _, tc := range []struct {
		mode     fs.FileMode
		uid, gid uint32
		ok       bool
	}{
		{0o600, me, other, true},
		{0o400, me, other, true},
		{0o440, root, own, true},    // a Kubernetes secret: root:fsGroup 0440
		{0o640, root, own, true},    // a host's root:arx 0640
		{0o640, root, other, false}, // a group this process is not in
		{0o640, me, own, false},     // its own file, readable by a group others may share
		{0o604, me, own, false},
		{0o644, root, own, false},
		{0o444, root, own, false},
		{0o060, root, own, true},
	} {
		err := privateMode("no-such-file", fakeInfo{mode: tc.mode, uid: tc.uid, gid: tc.gid})
		if (err == nil) != tc.ok {
			t.Errorf("mode %04o owner me=%v group own=%v: err %v, want ok=%v", tc.mode, tc.uid == me, tc.gid == own, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "chmod 600 no-such-file") {
			t.Errorf("mode %04o: error %q does not say how to fix it", tc.mode, err)
		}
	}
}

func TestACLReaders(t *testing.T) {
	me, own := uint32(os.Geteuid()), os.Getegid()
	stranger := me + 1000
	base := []aclEntry{{tag: aclUserObj, perm: 4}, {tag: aclGroupObj}, {tag: aclOther}}
	with := func(es ...aclEntry) []aclEntry { return append(slices.Clone(base), es...) }
	for _, tc := range []struct {
		name string
		acl  []aclEntry
		gid  int
		want string
	}{
		{"systemd credential: this user", with(aclEntry{tag: aclUser, perm: 4, id: me}, aclEntry{tag: aclMask, perm: 4}), 4242424, ""},
		{"another user", with(aclEntry{tag: aclUser, perm: 4, id: stranger}, aclEntry{tag: aclMask, perm: 4}), 4242424, "user"},
		{"another user masked out", with(aclEntry{tag: aclUser, perm: 4, id: stranger}, aclEntry{tag: aclMask, perm: 0}), 4242424, ""},
		{"another group", with(aclEntry{tag: aclGroup, perm: 4, id: 4242424}, aclEntry{tag: aclMask, perm: 4}), 4242424, "group"},
		{"own group", with(aclEntry{tag: aclGroup, perm: 4, id: uint32(own)}, aclEntry{tag: aclMask, perm: 4}), 4242424, ""},
		{"everyone", []aclEntry{{tag: aclUserObj, perm: 6}, {tag: aclGroupObj}, {tag: aclOther, perm: 4}}, 4242424, "every account"},
		{"owning group, not ours", []aclEntry{{tag: aclUserObj, perm: 6}, {tag: aclGroupObj, perm: 4}, {tag: aclMask, perm: 4}, {tag: aclOther}}, 4242424, "group"},
	} {
		got := aclReaders(tc.acl, int(me)+1, tc.gid)
		if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: aclReaders = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestPrivateModeACL: a file as systemd 254 and later hand a credential to
// a service (owner-only mode bits, an ACL entry for the service's user, the
// mask in the group bits) is private; one whose ACL lets another user read
// is not.
func TestPrivateModeACL(t *testing.T) {
	p := filepath.Join(t.TempDir(), "credential")
	if err := os.WriteFile(p, []byte("s3cret"), 0o400); err != nil {
		t.Fatal(err)
	}
	acl := func(user uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, 2)
		for _, e := range []aclEntry{{tag: aclUserObj, perm: 4, id: math.MaxUint32}, {tag: aclUser, perm: 4, id: user},
			{tag: aclGroupObj, id: math.MaxUint32}, {tag: aclMask, perm: 4, id: math.MaxUint32}, {tag: aclOther, id: math.MaxUint32}} {
			b = binary.LittleEndian.AppendUint16(b, e.tag)
			b = binary.LittleEndian.AppendUint16(b, e.perm)
			b = binary.LittleEndian.AppendUint32(b, e.id)
		}
		return b
	}
	if err := unix.Setxattr(p, "system.posix_acl_access", acl(uint32(os.Geteuid())), 0); err != nil {
		t.Skipf("this file system keeps no POSIX ACLs (%v)", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o070 == 0 {
		t.Fatalf("mode %04o: the ACL's mask is not in the group bits", fi.Mode().Perm())
	}
	if b, err := ReadSecretFile(p); err != nil || string(b) != "s3cret" {
		t.Errorf("a credential readable by this user through an ACL: %q, %v", b, err)
	}
	if err := unix.Setxattr(p, "system.posix_acl_access", acl(uint32(os.Geteuid())+1000), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecretFile(p); err == nil || !strings.Contains(err.Error(), "access control list") {
		t.Errorf("a file another user may read through an ACL: %v", err)
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

// TestKeyDirFromDataDir: a deployment that made its keys in its data
// directory moves them to a key directory by copying them; a key directory
// with other keys is refused; with no admin token anywhere yet, the start
// is refused rather than print one; a key directory's token that the
// deployment does not honour is warned about.
func TestKeyDirFromDataDir(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	srv, err := Open(t.Context(), Config{DataDir: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()

	fresh := filepath.Join(t.TempDir(), "fresh")
	if err := InitKeys(fresh, "example.com/arx"); err != nil {
		t.Fatal(err)
	}
	if srv, err := Open(t.Context(), Config{DataDir: data, KeyDir: fresh, Listen: "127.0.0.1:0"}); err == nil {
		srv.Close()
		t.Fatal("a new key directory was used on a data directory started with other keys")
	} else if !strings.Contains(err.Error(), "another log key") {
		t.Errorf("error %q does not say the keys differ", err)
	}

	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Mkdir(moved, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{LogKeyFile, LogPubFile, CredentialKeyFile} {
		b, err := os.ReadFile(filepath.Join(data, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(moved, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The deployment has its admin token: none is needed in the key
	// directory. A stale one is warned about.
	if err := AddAdminToken(moved); err != nil {
		t.Fatal(err)
	}
	var log logbuf.Buffer
	srv, err = Open(t.Context(), Config{DataDir: data, KeyDir: moved, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatalf("the data directory's own keys, copied: %v", err)
	}
	srv.Close()
	if !strings.Contains(log.String(), "not one this deployment honours") {
		t.Errorf("no warning about the key directory's stale admin token:\n%s", log.String())
	}

	// A fresh database and a key directory without a token: refused.
	if err := os.Remove(filepath.Join(fresh, AdminTokenFile)); err != nil {
		t.Fatal(err)
	}
	if srv, err := Open(t.Context(), Config{DataDir: t.TempDir(), KeyDir: fresh, Listen: "127.0.0.1:0"}); err == nil {
		srv.Close()
		t.Fatal("a first start with no admin token in the key directory made one")
	} else if !strings.Contains(err.Error(), "arx keys admin-token") {
		t.Errorf("error %q does not say how to add a token", err)
	}
	if err := AddAdminToken(fresh); err != nil {
		t.Fatal(err)
	}
	if err := AddAdminToken(fresh); err == nil {
		t.Error("AddAdminToken replaced a token")
	}
	srv, err = Open(t.Context(), Config{DataDir: t.TempDir(), KeyDir: fresh, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
}
