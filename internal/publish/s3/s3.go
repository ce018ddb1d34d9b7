// Package s3 is a publish.Bucket in any S3-compatible object store
// (s3://bucket/prefix), through minio-go: AWS S3, or a service at its own
// endpoint with path-style addressing if it needs it.
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"strings"

	"github.com/arxsec/arx/internal/publish"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

var _ publish.Bucket = (*Bucket)(nil)

// Config says where the bucket is and how to reach it. cmd/arx fills the
// credentials from the standard AWS environment variables.
type Config struct {
	Bucket string
	Prefix string // object key prefix, without leading or trailing slash
	// Endpoint is host[:port] or a URL (http:// for a plain-text endpoint);
	// empty means AWS S3.
	Endpoint  string
	Region    string
	PathStyle bool
	// Credentials; all empty means anonymous requests (a public bucket).
	AccessKey    string
	SecretKey    string
	SessionToken string
	// MaxRetries bounds the client's own retries of one request (default 3);
	// the caller's context bounds their time.
	MaxRetries int
}

// DefaultEndpoint is AWS S3.
const DefaultEndpoint = "s3.amazonaws.com"

// Bucket is an S3 bucket (and key prefix).
type Bucket struct {
	c      *minio.Client
	bucket string
	prefix string
	desc   string
}

// New returns a client for the bucket. It does not contact the service.
func New(cfg Config) (*Bucket, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 bucket: no bucket name")
	}
	endpoint, secure := cfg.Endpoint, true
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if strings.Contains(endpoint, "://") {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("s3 bucket: endpoint %q is not http(s)://host[:port]", cfg.Endpoint)
		}
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 3
	}
	c, err := minio.New(endpoint, &minio.Options{Creds: creds, Secure: secure, Region: cfg.Region,
		BucketLookup: lookup, MaxRetries: cfg.MaxRetries})
	if err != nil {
		return nil, fmt.Errorf("s3 bucket: %w", err)
	}
	prefix := strings.Trim(cfg.Prefix, "/")
	desc := "s3://" + cfg.Bucket
	if prefix != "" {
		desc += "/" + prefix
		prefix += "/"
	}
	if cfg.Endpoint != "" {
		desc += " at " + cfg.Endpoint
	}
	return &Bucket{c: c, bucket: cfg.Bucket, prefix: prefix, desc: desc}, nil
}

func (b *Bucket) String() string { return b.desc }

// Get implements publish.Bucket.
func (b *Bucket) Get(ctx context.Context, p string) ([]byte, error) {
	obj, err := b.c.GetObject(ctx, b.bucket, b.prefix+p, minio.GetObjectOptions{})
	if err != nil {
		return nil, b.wrap("get", p, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, b.wrap("get", p, err)
	}
	return data, nil
}

// Put implements publish.Bucket.
func (b *Bucket) Put(ctx context.Context, p string, data []byte, opts publish.PutOptions) error {
	po := minio.PutObjectOptions{ContentType: opts.ContentType, CacheControl: publish.CacheMutable}
	if opts.Immutable {
		po.CacheControl = publish.CacheImmutable
	}
	if _, err := b.c.PutObject(ctx, b.bucket, b.prefix+p, bytes.NewReader(data), int64(len(data)), po); err != nil {
		return b.wrap("put", p, err)
	}
	return nil
}

// Delete implements publish.Bucket.
func (b *Bucket) Delete(ctx context.Context, p string) error {
	if err := b.c.RemoveObject(ctx, b.bucket, b.prefix+p, minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil
		}
		return b.wrap("delete", p, err)
	}
	return nil
}

// MakeBucket creates the bucket if it does not exist (for tests and first
// setup; ARX itself only writes objects).
func (b *Bucket) MakeBucket(ctx context.Context, region string) error {
	ok, err := b.c.BucketExists(ctx, b.bucket)
	if err != nil {
		return b.wrap("check", "", err)
	}
	if ok {
		return nil
	}
	if err := b.c.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{Region: region}); err != nil {
		return b.wrap("create", "", err)
	}
	return nil
}

// wrap maps "no such key" to fs.ErrNotExist and names the object, never the
// credentials.
func (b *Bucket) wrap(op, p string, err error) error {
	if code := minio.ToErrorResponse(err).Code; code == minio.NoSuchKey || code == "NotFound" {
		return fmt.Errorf("%s: %s %s: %w", b.desc, op, p, fs.ErrNotExist)
	}
	return fmt.Errorf("%s: %s %s: %w", b.desc, op, p, err)
}
