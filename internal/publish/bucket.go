package publish

import (
	"context"
	"errors"
	"io/fs"
)

// Bucket is where the log is published: an object store holding the C2SP
// tlog-tiles layout. Backends live in sub-packages (file, s3), each with a
// compile-time check that it implements Bucket; bucketurl picks one by the
// URL's scheme.
type Bucket interface {
	// Get returns an object whole. A missing object is an error wrapping
	// fs.ErrNotExist.
	Get(ctx context.Context, path string) ([]byte, error)
	// Put writes an object whole, replacing any object at path, and returns
	// only once the object is stored.
	Put(ctx context.Context, path string, data []byte, opts PutOptions) error
	// Delete removes an object; a missing object is not an error.
	Delete(ctx context.Context, path string) error
	// String names the bucket for logs and reports, without credentials.
	String() string
}

// PutOptions describe an object.
type PutOptions struct {
	ContentType string
	// Immutable objects (tiles, entry bundles) never change once written;
	// the checkpoint does.
	Immutable bool
}

// Cache-Control values for objects, as tlog-tiles asks: tiles are cached
// for good, the checkpoint never.
const (
	CacheImmutable = "max-age=31536000, immutable"
	CacheMutable   = "no-cache"
)

// IsNotExist reports whether err says an object is missing.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
