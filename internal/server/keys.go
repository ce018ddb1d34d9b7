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
	"strings"

	"github.com/arxsec/arx/credential"
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

// loadOrCreateLogKey returns the log's signer and verifier keys, creating
// them with the given origin on first start.
func loadOrCreateLogKey(dir, origin string) (skey, vkey string, created bool, err error) {
	skeyPath, vkeyPath := filepath.Join(dir, LogKeyFile), filepath.Join(dir, LogPubFile)
	b, err := os.ReadFile(skeyPath)
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

func loadOrCreateCredentialKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, CredentialKeyFile)
	b, err := os.ReadFile(path)
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
