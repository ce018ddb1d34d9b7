// Package file is a publish.Bucket in a local directory (file:///dir): the
// same layout as a real bucket, for development and tests. Each object is
// written to a temporary file, fsynced and renamed into place, so a reader
// never sees half an object.
package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/arxsec/arx/internal/publish"
)

var _ publish.Bucket = (*Bucket)(nil)

// Bucket is a directory holding objects as files.
type Bucket struct {
	dir string
}

// New returns a bucket rooted at dir, created if missing.
func New(dir string) (*Bucket, error) {
	if dir == "" {
		return nil, errors.New("file bucket: no directory")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("file bucket: %w", err)
	}
	return &Bucket{dir: dir}, nil
}

// Dir is the bucket's directory.
func (b *Bucket) Dir() string { return b.dir }

func (b *Bucket) String() string { return "file://" + filepath.ToSlash(b.dir) }

// path maps an object path to a file, refusing paths that would leave the
// directory.
func (b *Bucket) path(p string) (string, error) {
	if p == "" || strings.HasPrefix(p, "/") || !fs.ValidPath(p) {
		return "", fmt.Errorf("file bucket: invalid object path %q", p)
	}
	return filepath.Join(b.dir, filepath.FromSlash(p)), nil
}

// Get implements publish.Bucket.
func (b *Bucket) Get(ctx context.Context, p string) ([]byte, error) {
	fp, err := b.path(p)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(fp)
	if err != nil {
		return nil, fmt.Errorf("file bucket: get %s: %w", p, err)
	}
	return data, nil
}

// Put implements publish.Bucket.
func (b *Bucket) Put(ctx context.Context, p string, data []byte, _ publish.PutOptions) error {
	fp, err := b.path(p)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(fp)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("file bucket: put %s: %w", p, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("file bucket: put %s: %w", p, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), fp)
	}
	if err != nil {
		return fmt.Errorf("file bucket: put %s: %w", p, err)
	}
	return nil
}

// Delete implements publish.Bucket.
func (b *Bucket) Delete(ctx context.Context, p string) error {
	fp, err := b.path(p)
	if err != nil {
		return err
	}
	if err := os.Remove(fp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file bucket: delete %s: %w", p, err)
	}
	return nil
}
