// Command arx-image builds ARX's OCI image without a container daemon and
// writes it as an OCI image layout, a tarball for docker load, or to a
// registry:
//
//	go run ./cmd/arx-image --oci arx-oci                   # both platforms, an OCI layout
//	go run ./cmd/arx-image --platform linux/amd64 --tar arx.tar --tag arx:dev && docker load -i arx.tar
//	go run ./cmd/arx-image --push registry.example.com/arx:1.4.0
//
// The image runs arx as a non-root user (65532) and writes only to
// /var/lib/arx: run it with a read-only root filesystem.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/arxsec/arx/internal/ociimage"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "arx-image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("arx-image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	src := fs.String("source", ".", "the root of ARX's sources (where go.mod is)")
	platforms := fs.String("platform", "linux/amd64,linux/arm64", "platforms to build, comma-separated")
	ociDir := fs.String("oci", "", "write the image index as an OCI image layout in this directory (skopeo, crane, podman and containerd read it)")
	tarFile := fs.String("tar", "", "write a tarball for docker load (one platform only)")
	tag := fs.String("tag", "arx:dev", "the name docker load gives the image from --tar")
	push := fs.String("push", "", "push the image index to this registry reference (credentials from ~/.docker/config.json)")
	ca := fs.String("ca-bundle", ociimage.DefaultCABundle, "PEM file of the certificate authorities the image trusts")
	version := fs.String("version", "", "the version the image's label names (default: the commit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *ociDir == "" && *tarFile == "" && *push == "" {
		return errors.New("say where the image goes: --oci DIR, --tar FILE or --push REFERENCE")
	}
	created, err := ociimage.SourceDate(*src)
	if err != nil {
		return err
	}
	rev := ociimage.Revision(*src)
	if *version == "" {
		*version = rev
	}
	plats := strings.Split(*platforms, ",")
	if *tarFile != "" && len(plats) != 1 {
		return errors.New("--tar holds one platform: pass --platform linux/amd64 (or arm64)")
	}
	idx, err := ociimage.Build(ctx, ociimage.Config{Source: *src, Platforms: plats, Created: created,
		CABundle: *ca, Version: *version, Revision: rev, Log: stderr})
	if err != nil {
		return err
	}
	digest, err := idx.Digest()
	if err != nil {
		return err
	}
	if *ociDir != "" {
		if _, err := layout.Write(*ociDir, idx); err != nil {
			return fmt.Errorf("--oci: %w", err)
		}
		fmt.Fprintf(stdout, "wrote %s (OCI image layout), index %s\n", *ociDir, digest)
	}
	if *tarFile != "" {
		ref, err := name.NewTag(*tag)
		if err != nil {
			return fmt.Errorf("--tag: %w", err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		img, err := idx.Image(m.Manifests[0].Digest)
		if err != nil {
			return err
		}
		if err := tarball.WriteToFile(*tarFile, ref, img); err != nil {
			return fmt.Errorf("--tar: %w", err)
		}
		fmt.Fprintf(stdout, "wrote %s (docker load -i %s gives %s), image %s\n", *tarFile, *tarFile, ref, m.Manifests[0].Digest)
	}
	if *push != "" {
		ref, err := name.ParseReference(*push)
		if err != nil {
			return fmt.Errorf("--push: %w", err)
		}
		if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("--push: %w", err)
		}
		fmt.Fprintf(stdout, "pushed %s@%s\n", ref.Context(), digest)
	}
	return nil
}
