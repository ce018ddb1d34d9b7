// Package bucketurl opens a publish.Bucket from its URL: the scheme picks
// the backend (file:///dir, s3://bucket/prefix).
package bucketurl

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/publish/s3"
)

// Options are what a URL cannot say: the S3 endpoint, region, addressing
// and credentials (Bucket and Prefix come from the URL).
type Options struct {
	S3 s3.Config
}

// Open returns the bucket named by rawURL.
func Open(rawURL string, opts Options) (publish.Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bucket URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, fmt.Errorf("bucket URL %q: a file URL names a local directory: file:///path", rawURL)
		}
		if u.Path == "" {
			return nil, fmt.Errorf("bucket URL %q has no directory", rawURL)
		}
		return file.New(filepath.FromSlash(u.Path))
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("bucket URL %q has no bucket name: s3://bucket/prefix", rawURL)
		}
		cfg := opts.S3
		cfg.Bucket, cfg.Prefix = u.Host, strings.Trim(u.Path, "/")
		return s3.New(cfg)
	case "":
		return nil, fmt.Errorf("bucket URL %q has no scheme: use file:///dir or s3://bucket/prefix", rawURL)
	}
	return nil, fmt.Errorf("bucket URL %q: unknown scheme %q (file or s3)", rawURL, u.Scheme)
}
