package witness

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/tlog"
)

// state is what the witness keeps per log: the latest checkpoint it
// cosigned. On disk it is that checkpoint, as the log signed it, in
// DIR/<sha256 of the origin>.checkpoint.
type state struct {
	Size       int64
	Root       tlog.Hash
	Checkpoint []byte
}

type stateDir struct{ dir string }

func openState(dir string) (*stateDir, error) {
	if dir == "" {
		return nil, errors.New("witness: a state directory is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("witness: state directory: %w", err)
	}
	return &stateDir{dir: dir}, nil
}

func (s *stateDir) path(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return filepath.Join(s.dir, hex.EncodeToString(h[:16])+".checkpoint")
}

// load returns the latest cosigned checkpoint of origin; size 0 when none.
func (s *stateDir) load(origin string) (state, error) {
	b, err := os.ReadFile(s.path(origin))
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, nil
	}
	if err != nil {
		return state{}, fmt.Errorf("witness: read state: %w", err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal(b); err != nil || cp.Origin != origin || len(cp.Hash) != tlog.HashSize {
		return state{}, fmt.Errorf("witness: state file %s is corrupt", s.path(origin))
	}
	return state{Size: int64(cp.Size), Root: tlog.Hash(cp.Hash), Checkpoint: b}, nil
}

// store replaces the state of origin atomically and durably: a temporary
// file, fsynced, renamed over the old one, and the directory fsynced, so a
// crash leaves either the old state or the new one.
func (s *stateDir) store(origin string, st state) error {
	path := s.path(origin)
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("witness: write state: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(st.Checkpoint)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("witness: write state: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
