// Package ociimage builds ARX's OCI image without a container daemon: the
// arx binary built by the Go toolchain (static, CGO off), on a base of a
// few files made here (an account for the non-root user, CA certificates,
// a writable data directory and /tmp), for each platform, as one image
// index. Built twice from the same sources and CA bundle (which, with the
// Go toolchain go.mod names and the build uses exactly, the image's labels
// name), it is the same bytes and the same digest: every file's time is the build's source date,
// owners and modes are fixed, and nothing else varies.
package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/mod/modfile"
)

// The image's layout: who runs arx and where it writes.
const (
	UID        = 65532 // "nonroot", as distroless images name it
	Binary     = "/usr/local/bin/arx"
	DataDir    = "/var/lib/arx" // the one directory arx writes (a volume); the server keeps its files in DataDir/data
	ListenPort = 8080
)

// Config says what to build.
type Config struct {
	// Source is the root of ARX's module (where go.mod is).
	Source string
	// Platforms to build, as "linux/amd64"; default: linux/amd64 and
	// linux/arm64.
	Platforms []string
	// Created is the time stamped on every file and on the image: the
	// sources' date (SOURCE_DATE_EPOCH, or the last commit's), so a
	// rebuild is identical.
	Created time.Time
	// CABundle is the PEM file of certificate authorities arx trusts for
	// outbound TLS (S3, witnesses, the identity provider, connectors).
	CABundle string
	// Version labels the image (org.opencontainers.image.version).
	Version string
	// Revision labels the image with the commit it was built from.
	Revision string
	// Log, when set, is told each step.
	Log io.Writer

	inputs map[string]string // what else decides the bytes, as labels
}

// DefaultCABundle is where Debian and Ubuntu keep the system's trusted
// authorities (the ca-certificates package).
const DefaultCABundle = "/etc/ssl/certs/ca-certificates.crt"

// Build builds the image index: one image per platform.
func Build(ctx context.Context, cfg Config) (v1.ImageIndex, error) {
	if len(cfg.Platforms) == 0 {
		cfg.Platforms = []string{"linux/amd64", "linux/arm64"}
	}
	if cfg.CABundle == "" {
		cfg.CABundle = DefaultCABundle
	}
	ca, err := os.ReadFile(cfg.CABundle)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w (install ca-certificates, or name a PEM bundle)", err)
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("CA certificates: %s holds no PEM certificate", cfg.CABundle)
	}
	base, err := baseLayer(ca, cfg.Created)
	if err != nil {
		return nil, err
	}
	toolchain, err := Toolchain(cfg.Source)
	if err != nil {
		return nil, err
	}
	gover, err := goVersion(ctx, cfg.Source, toolchain)
	if err != nil {
		return nil, err
	}
	cfg.inputs = map[string]string{"dev.arx.image.go-version": gover, "dev.arx.image.ca-bundle.sha256": fmt.Sprintf("%x", sha256.Sum256(ca))}
	work, err := os.MkdirTemp("", "arx-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range cfg.Platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil || plat.OS != "linux" || plat.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want linux/ARCH, such as linux/arm64", p)
		}
		bin := filepath.Join(work, "arx-"+plat.Architecture+plat.Variant)
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "building arx for %s\n", plat)
		}
		if err := goBuild(ctx, cfg.Source, toolchain, bin, plat); err != nil {
			return nil, err
		}
		img, err := image(base, bin, plat, cfg)
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return idx, nil
}

// Toolchain is the Go toolchain the image is built with: the one go.mod
// names (its toolchain line, else its go line), exactly, so that two
// machines with other Go installations build the same bytes (the go
// command fetches that toolchain from the module proxy when it is not the
// one installed).
func Toolchain(src string) (string, error) {
	b, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		return "", err
	}
	f, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		return "", err
	}
	switch {
	case f.Toolchain != nil:
		return f.Toolchain.Name, nil
	case f.Go != nil:
		return "go" + f.Go.Version, nil
	}
	return "", errors.New("go.mod names no Go version")
}

// goVersion is the version of the Go toolchain that builds in src.
func goVersion(ctx context.Context, src, toolchain string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOVERSION")
	cmd.Dir, cmd.Env = src, append(goEnv(), "GOTOOLCHAIN="+toolchain)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// goEnv is what the Go toolchain needs from this process's environment:
// where it keeps its caches and finds modules.
func goEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOPROXY", "GONOSUMDB", "GONOSUMCHECK", "GOPRIVATE", "GOSUMDB", "GOFLAGS", "GOROOT", "SSL_CERT_FILE", "HTTPS_PROXY", "NO_PROXY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// goBuild builds a static arx for the platform. The toolchain gets only the
// environment it needs: where Go keeps its caches and finds modules.
func goBuild(ctx context.Context, src, toolchain, out string, plat *v1.Platform) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, "./cmd/arx")
	cmd.Dir = src
	cmd.Env = append(goEnv(), "GOTOOLCHAIN="+toolchain, "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+plat.Architecture)
	if plat.Architecture == "arm" && plat.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(plat.Variant, "v"))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", plat, err, stderr.Bytes())
	}
	return nil
}

// image puts the binary on the base and sets how the image runs.
func image(base v1.Layer, bin string, plat *v1.Platform, cfg Config) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	app, err := layer(cfg.Created, []file{{name: strings.TrimPrefix(Binary, "/"), mode: 0o755, body: b}})
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, base, app)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: cfg.Created}
	cf.Author = "ARX"
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", UID, UID),
		Entrypoint: []string{Binary},
		Cmd:        []string{"serve", "--listen", fmt.Sprintf("0.0.0.0:%d", ListenPort), "--data", DataDir + "/data"},
		WorkingDir: DataDir,
		Env: []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
			"HOME=" + DataDir},
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", ListenPort): {}},
		Volumes:      map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "arx",
			"org.opencontainers.image.description": "ARX: the runtime between AI agents and systems of record",
			"org.opencontainers.image.licenses":    "Apache-2.0",
			"org.opencontainers.image.version":     cfg.Version,
			"org.opencontainers.image.revision":    cfg.Revision,
			"org.opencontainers.image.created":     cfg.Created.UTC().Format(time.RFC3339),
		},
		StopSignal: "SIGTERM",
	}
	maps.Copy(cf.Config.Labels, cfg.inputs)
	cf.History = []v1.History{
		{Created: v1.Time{Time: cfg.Created}, CreatedBy: "arx image: accounts, CA certificates, " + DataDir, Author: "ARX"},
		{Created: v1.Time{Time: cfg.Created}, CreatedBy: "arx image: go build -trimpath ./cmd/arx (CGO_ENABLED=0)", Author: "ARX"},
	}
	return mutate.ConfigFile(img, cf)
}

// file is one entry of a layer: a directory when body is nil and dir set.
type file struct {
	name string
	mode int64
	uid  int
	dir  bool
	body []byte
}

// baseLayer holds what a static binary needs from an operating system.
func baseLayer(ca []byte, created time.Time) (v1.Layer, error) {
	data := strings.TrimPrefix(DataDir, "/")
	return layer(created, []file{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, body: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", UID, UID, DataDir)},
		{name: "etc/group", mode: 0o644, body: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", UID)},
		{name: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{name: "etc/ssl", mode: 0o755, dir: true},
		{name: "etc/ssl/certs", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: ca},
		{name: "tmp", mode: 0o1777, dir: true},
		{name: "usr", mode: 0o755, dir: true},
		{name: "usr/local", mode: 0o755, dir: true},
		{name: "usr/local/bin", mode: 0o755, dir: true},
		{name: "var", mode: 0o755, dir: true},
		{name: "var/lib", mode: 0o755, dir: true},
		{name: data, mode: 0o700, dir: true, uid: UID},
	})
}

// layer makes an uncompressed tar of files, every one with the same time
// and numeric owners, and wraps it as a gzip-compressed OCI layer.
func layer(created time.Time, files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: created, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

// SourceDate is the time a reproducible build stamps: SOURCE_DATE_EPOCH when
// set (reproducible-builds.org), else the last commit's time in src, else
// the Unix epoch.
func SourceDate(src string) (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		var sec int64
		if _, err := fmt.Sscan(s, &sec); err != nil || sec < 0 {
			return time.Time{}, errors.New("SOURCE_DATE_EPOCH is not a count of seconds")
		}
		return time.Unix(sec, 0).UTC(), nil
	}
	out, err := exec.Command("git", "-C", src, "log", "-1", "--format=%ct").Output()
	if err == nil {
		var sec int64
		if _, err := fmt.Sscan(string(out), &sec); err == nil {
			return time.Unix(sec, 0).UTC(), nil
		}
	}
	return time.Unix(0, 0).UTC(), nil
}

// Revision is the commit src is at, or "" outside a git checkout.
func Revision(src string) string {
	out, err := exec.Command("git", "-C", src, "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
