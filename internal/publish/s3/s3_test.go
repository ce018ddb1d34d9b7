package s3

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/publish"
)

// testConfig is the S3 server CI starts (.ci/setup-s3.sh). Without it the
// tests skip when run by hand, and fail when ARX_TEST_REQUIRE_SERVERS=1.
func testConfig(t *testing.T) Config {
	t.Helper()
	endpoint := os.Getenv("ARX_TEST_S3_ENDPOINT")
	if endpoint == "" {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
			t.Fatal("ARX_TEST_S3_ENDPOINT is not set, and ARX_TEST_REQUIRE_SERVERS=1: source .ci/setup-s3.sh")
		}
		t.Skip("no S3 server: set ARX_TEST_S3_ENDPOINT (source .ci/setup-s3.sh starts one)")
	}
	return Config{Endpoint: endpoint, Bucket: os.Getenv("ARX_TEST_S3_BUCKET"), PathStyle: true, Region: "us-east-1",
		AccessKey: os.Getenv("ARX_TEST_S3_ACCESS_KEY"), SecretKey: os.Getenv("ARX_TEST_S3_SECRET_KEY")}
}

func TestBucket(t *testing.T) {
	cfg := testConfig(t)
	cfg.Prefix = "test-" + time.Now().Format("150405.000000")
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := b.MakeBucket(ctx, cfg.Region); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "tile/0/000"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing object: %v", err)
	}
	if err := b.Put(ctx, "tile/0/000", []byte("hashes"), publish.PutOptions{Immutable: true}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "checkpoint", []byte("one"), publish.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "checkpoint", []byte("two"), publish.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "checkpoint"); err != nil || !bytes.Equal(got, []byte("two")) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if err := b.Delete(ctx, "tile/0/000"); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "tile/0/000"); err != nil {
		t.Fatalf("deleting a missing object: %v", err)
	}
	if _, err := b.Get(ctx, "tile/0/000"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deleted object: %v", err)
	}
	// Wrong credentials are an error, not "missing".
	bad := cfg
	bad.SecretKey = "wrong"
	bb, _ := New(bad)
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := bb.Get(ctx2, "checkpoint"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("bad credentials: %v", err)
	}
}
