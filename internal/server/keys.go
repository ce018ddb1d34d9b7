package server

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

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
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := privateMode(path, fi); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// privateMode refuses a secret file that another account may read. A
// file the process reads through its group is private when the group is
// one of the process's own: Kubernetes mounts a secret as group-readable
// by the pod's fsGroup (mode 0440), and a host may hand a service root:arx
// 0640 files. Bits for everyone else are never allowed.
func privateMode(path string, fi fs.FileInfo) error {
	m := fi.Mode().Perm()
	if m&0o007 != 0 {
		return fmt.Errorf("%s has mode %04o: it holds a secret that every account may read; run: chmod 600 %s", path, m, path)
	}
	if m&0o070 == 0 {
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && ownGroup(int(st.Gid)) {
		return nil
	}
	return fmt.Errorf("%s has mode %04o and a group this process is not in: others may read the secret; run: chmod 600 %s", path, m, path)
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

// ReadSecretFile reads a secret from a file: trimmed of the line end an
// editor adds, not empty, at most 4 KiB, and readable by no other account
// (see privateMode).
func ReadSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := privateMode(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() > 4096 {
		return nil, fmt.Errorf("%s is larger than a secret", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
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
