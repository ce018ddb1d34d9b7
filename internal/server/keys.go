package server

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/arxsec/arx/credential"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/record"
)

// Key files in the data directory. Private keys are mode 0600.
const (
	LogKeyFile        = "log.key"        // note signer key (PRIVATE+KEY+origin+...)
	LogPubFile        = "log.pub"        // note verifier key, for auditors
	CredentialKeyFile = "credential.key" // PKCS #8 PEM, Ed25519
	AdminTokenFile    = "admin.token"
	DatabaseFile      = "arx.db"
)

// errNoKey is returned for a key that is missing where it may not be made.
var errNoKey = errors.New("not there")

// loadOrCreateLogKey returns the log's signer and verifier keys, creating
// them with the given origin on first start (when create is set).
func loadOrCreateLogKey(dir, origin string, create bool) (skey, vkey string, created bool, err error) {
	skeyPath, vkeyPath := filepath.Join(dir, LogKeyFile), filepath.Join(dir, LogPubFile)
	b, err := readKeyFile(skeyPath)
	if err == nil {
		v, err := os.ReadFile(vkeyPath)
		if err != nil {
			return "", "", false, fmt.Errorf("log key present but %s is not: %w", LogPubFile, err)
		}
		return strings.TrimSpace(string(b)), strings.TrimSpace(string(v)), false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", "", false, err
	}
	if !create {
		return "", "", false, fmt.Errorf("%s: %w", skeyPath, errNoKey)
	}
	skey, vkey, err = record.GenerateKey(origin)
	if err != nil {
		return "", "", false, fmt.Errorf("generate log key: %w", err)
	}
	if err := writeFileAtomic(vkeyPath, []byte(vkey+"\n"), 0o644); err != nil {
		return "", "", false, err
	}
	if err := writeFileAtomic(skeyPath, []byte(skey+"\n"), 0o600); err != nil {
		return "", "", false, err
	}
	return skey, vkey, true, nil
}

func loadOrCreateCredentialKey(dir string, create bool) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, CredentialKeyFile)
	b, err := readKeyFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("%s is not a PEM private key", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s is not an Ed25519 key", path)
		}
		return ek, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if !create {
		return nil, fmt.Errorf("%s: %w", path, errNoKey)
	}
	k, err := credential.GenerateKey()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// readKeyFile reads a key file that only this process's user (and group)
// may read.
func readKeyFile(path string) ([]byte, error) {
	if err := CheckPrivate(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// privateMode refuses a secret file that another account may read. Bits
// for everyone else are never allowed. Group bits are allowed when the
// group is one of the process's own and the file is someone else's (root's,
// as Kubernetes mounts a secret: root:fsGroup 0440), so that the group is
// how this process reads it; a file the process owns must not be readable
// by its group, which others may share. A file with a POSIX ACL (systemd
// 254 and later give a service its credentials as root:root 0400 plus an
// ACL entry for the service's user; the group bits then show the ACL's
// mask) is private when every entry that grants reading names this process
// or the file's owner.
func privateMode(path string, fi fs.FileInfo) error {
	m := fi.Mode().Perm()
	if m&0o007 != 0 {
		return fmt.Errorf("%s has mode %04o: it holds a secret that every account may read; run: chmod 600 %s", path, m, path)
	}
	if m&0o070 == 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s has mode %04o: others may read the secret; run: chmod 600 %s", path, m, path)
	}
	if acl, ok := readACL(path); ok {
		if who := aclReaders(acl, int(st.Uid), int(st.Gid)); who != "" {
			return fmt.Errorf("%s has an access control list that lets %s read the secret; run: setfacl -b %s && chmod 600 %s", path, who, path, path)
		}
		return nil
	}
	if int(st.Uid) != os.Geteuid() && ownGroup(int(st.Gid)) {
		return nil
	}
	return fmt.Errorf("%s has mode %04o and its group may read it (a group this process is not in, or of a file it owns): others may read the secret; run: chmod 600 %s", path, m, path)
}

// ACL entry tags and the read permission, as Linux stores them in the
// system.posix_acl_access attribute (acl_ea.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclRead     = 0x04
)

// aclEntry is one entry of a POSIX ACL.
type aclEntry struct {
	tag, perm uint16
	id        uint32
}

// readACL reads a file's access ACL; ok is false when it has none (or the
// system keeps none).
func readACL(path string) (_ []aclEntry, ok bool) {
	buf := make([]byte, 4+8*64)
	n, err := unix.Getxattr(path, "system.posix_acl_access", buf)
	if err != nil || n < 4 || (n-4)%8 != 0 || binary.LittleEndian.Uint32(buf) != 2 {
		return nil, false
	}
	var acl []aclEntry
	for b := buf[4:n]; len(b) >= 8; b = b[8:] {
		acl = append(acl, aclEntry{tag: binary.LittleEndian.Uint16(b), perm: binary.LittleEndian.Uint16(b[2:]), id: binary.LittleEndian.Uint32(b[4:])})
	}
	return acl, true
}

// aclReaders names whom, besides the file's owner and this process, the
// ACL lets read the file ("" when no one): named users other than this
// process, the owning group and named groups that are not the process's,
// and everyone else (the owning group counts as the process's as in
// privateMode). The mask limits every entry but the owner's and
// everyone else's.
func aclReaders(acl []aclEntry, fileUid, fileGid int) string {
	mask := uint16(0o7)
	for _, e := range acl {
		if e.tag == aclMask {
			mask = e.perm
		}
	}
	for _, e := range acl {
		perm := e.perm
		if e.tag == aclUser || e.tag == aclGroupObj || e.tag == aclGroup {
			perm &= mask
		}
		if perm&aclRead == 0 {
			continue
		}
		switch e.tag {
		case aclUser:
			if int(e.id) != os.Geteuid() {
				return fmt.Sprintf("user %d", e.id)
			}
		case aclGroupObj: // as without an ACL: the process's group, on a file of someone else's
			if !ownGroup(fileGid) || fileUid == os.Geteuid() {
				return fmt.Sprintf("group %d", fileGid)
			}
		case aclGroup:
			if !ownGroup(int(e.id)) {
				return fmt.Sprintf("group %d", e.id)
			}
		case aclOther:
			return "every account"
		}
	}
	return ""
}

// ownGroup says whether gid is the process's group or one of its
// supplementary groups.
func ownGroup(gid int) bool {
	if gid == os.Getegid() {
		return true
	}
	groups, _ := os.Getgroups()
	return slices.Contains(groups, gid)
}

// CheckPrivate refuses a file that holds a secret and that another account
// may read (see privateMode).
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return privateMode(path, fi)
}

// ReadSecretFile reads a secret from a file: trimmed of the line end an
// editor adds, not empty, at most 4 KiB, and readable by no other account
// (see privateMode).
func ReadSecretFile(path string) ([]byte, error) {
	b, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > 4096 {
		return nil, fmt.Errorf("%s is larger than a secret", path)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty", path)
	}
	return b, nil
}

// InitKeys makes a deployment's keys and first admin token in dir, which
// must not hold any of them yet: log.key and log.pub (named origin),
// credential.key and admin.token, each readable by its owner only. A
// deployment started with --key-dir reads them from a copy of dir (a
// Kubernetes secret, systemd credentials) and never makes its own.
func InitKeys(dir, origin string) error {
	if origin == "" {
		return errors.New("no origin: name the deployment's log, such as example.com/arx")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{LogKeyFile, LogPubFile, CredentialKeyFile, AdminTokenFile} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s exists: a deployment keeps its keys for life; choose an empty directory", filepath.Join(dir, name))
		}
	}
	if _, _, _, err := loadOrCreateLogKey(dir, origin, true); err != nil {
		return err
	}
	if _, err := loadOrCreateCredentialKey(dir, true); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, AdminTokenFile), []byte(runtime.NewAdminToken()+"\n"), 0o600)
}

// AddAdminToken writes a new admin token to dir/admin.token, which must not
// exist: for a key directory made from an existing deployment's keys, or
// one whose token was removed after the first start.
func AddAdminToken(dir string) error {
	p := filepath.Join(dir, AdminTokenFile)
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s exists", p)
	}
	return writeFileAtomic(p, []byte(runtime.NewAdminToken()+"\n"), 0o600)
}

// sameKeysAsDataDir refuses a key directory whose keys are not those a data
// directory made before (a deployment moving to --key-dir copies its own;
// a new key directory would sign a second log on the same database).
func sameKeysAsDataDir(dataDir, keyDir, vkey string, cred ed25519.PrivateKey) error {
	if b, err := os.ReadFile(filepath.Join(dataDir, LogPubFile)); err == nil && strings.TrimSpace(string(b)) != vkey {
		return fmt.Errorf("the key directory %s holds another log key than the data directory %s was started with (%s): copy the data directory's %s, %s and %s into the key directory instead",
			keyDir, dataDir, LogPubFile, LogKeyFile, LogPubFile, CredentialKeyFile)
	}
	if mine, err := loadOrCreateCredentialKey(dataDir, false); err == nil && !mine.Equal(cred) {
		return fmt.Errorf("the key directory %s holds another credential key than the data directory %s was started with: copy the data directory's %s, %s and %s into the key directory instead",
			keyDir, dataDir, LogKeyFile, LogPubFile, CredentialKeyFile)
	}
	return nil
}

// readKeyDir reads the keys of a deployment from dir, which InitKeys made
// (or a copy of it): none is created. The admin token is optional there.
func readKeyDir(dir string) (skey, vkey string, cred ed25519.PrivateKey, adminToken string, err error) {
	hint := func(err error) error {
		return fmt.Errorf("key directory: %w (make the keys once with: arx keys init DIR --origin NAME)", err)
	}
	skey, vkey, _, err = loadOrCreateLogKey(dir, "", false)
	if err != nil {
		return "", "", nil, "", hint(err)
	}
	if cred, err = loadOrCreateCredentialKey(dir, false); err != nil {
		return "", "", nil, "", hint(err)
	}
	b, err := readKeyFile(filepath.Join(dir, AdminTokenFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", "", nil, "", hint(err)
	default:
		adminToken = strings.TrimSpace(string(b))
		if !runtime.ValidAdminToken(adminToken) {
			return "", "", nil, "", hint(fmt.Errorf("%s is not an admin token arx made", filepath.Join(dir, AdminTokenFile)))
		}
	}
	return skey, vkey, cred, adminToken, nil
}

// writeFileAtomic writes a new file through a temporary name, fsyncs it and
// renames it in place, so a crash never leaves half a key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// secretFiles are the files of the data directory that hold secrets.
var secretFiles = []string{LogKeyFile, CredentialKeyFile, AdminTokenFile}

// checkPermissions refuses a data directory that others may read, or a
// secret in it that others may read (a new, empty directory is closed to
// 0700 instead): ARX makes them 0700 and 0600, but a
// directory from a copy, a backup or another tool keeps its own modes, and
// serving with loose ones would expose the keys and the admin token to
// every account on the host. It names the file and the command that fixes
// it.
func checkPermissions(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		// A directory that holds no secret yet (made with mkdir, or
		// handed over empty) is ARX's to close before it writes any.
		fresh := true
		for _, name := range secretFiles {
			if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
				fresh = false
			}
		}
		if !fresh {
			return fmt.Errorf("data directory %s has mode %04o: others may read the keys and the database; run: chmod 700 %s", dir, m, dir)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data directory %s has mode %04o and cannot be closed (%w); run: chmod 700 %s", dir, m, err, dir)
		}
	}
	for _, name := range secretFiles {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			return fmt.Errorf("%s has mode %04o: it holds a secret that others may read; run: chmod 600 %s", p, m, p)
		}
	}
	return nil
}
