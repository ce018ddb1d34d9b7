package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/witness"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/note"
)

// What arx dev publishes: the log goes to a bucket directory in the data
// directory and a witness of its own, on a loopback port, cosigns every
// checkpoint, as arx serve --bucket --witness does with a customer's bucket
// and independent witnesses.
const (
	devBucketDir   = "bucket"      // under the data directory
	devWitnessDir  = "dev-witness" // its key and state, under the data directory
	devWitnessName = "arx-dev.localhost/witness"
	// Short intervals, so a first look sees entries uploaded and cosigned
	// within seconds.
	devPublishInterval = time.Second
	devWitnessInterval = 5 * time.Second
)

// devWitness is the local witness arx dev runs beside the runtime.
type devWitness struct {
	dir  string
	vkey string
	url  string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger
	errc chan error
}

// listenDevWitness loads or makes the dev witness's key (kept with the
// data directory, so a --data directory keeps its witness) and takes a
// loopback port. It serves once serve names the log.
func listenDevWitness(dataDir string, log *slog.Logger) (*devWitness, error) {
	dir := filepath.Join(dataDir, devWitnessDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keyFile, pubFile := filepath.Join(dir, "witness.key"), filepath.Join(dir, "witness.pub")
	skey, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		s, v, gerr := record.GenerateWitnessKey(devWitnessName)
		if gerr != nil {
			return nil, gerr
		}
		if err := os.WriteFile(pubFile, []byte(v+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(keyFile, []byte(s+"\n"), 0o600); err != nil {
			return nil, err
		}
		skey, err = []byte(s), nil
	}
	if err != nil {
		return nil, fmt.Errorf("the dev witness's key: %w", err)
	}
	vkey, err := os.ReadFile(pubFile)
	if err != nil {
		return nil, fmt.Errorf("the dev witness's key: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	w := &devWitness{dir: dir, vkey: strings.TrimSpace(string(vkey)), url: "http://" + ln.Addr().String(), ln: ln, log: log, errc: make(chan error, 1)}
	// Checked now, so a damaged key fails before the runtime starts.
	if _, err := record.NewCosigner(strings.TrimSpace(string(skey))); err != nil {
		ln.Close()
		return nil, fmt.Errorf("the dev witness's key %s: %w", keyFile, err)
	}
	return w, nil
}

// publishConfig is arx dev's publish.Config: the bucket directory and this
// witness, whose one cosignature is the quorum.
func (w *devWitness) publishConfig(dataDir string) (*publish.Config, error) {
	dir := filepath.Join(dataDir, devBucketDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b, err := file.New(dir)
	if err != nil {
		return nil, err
	}
	return &publish.Config{Bucket: b, Quorum: 1, PublishInterval: devPublishInterval, WitnessInterval: devWitnessInterval,
		Witnesses: []publish.Witness{{URL: w.url, VKey: w.vkey}}}, nil
}

// serve starts witnessing the log of the given origin and key.
func (w *devWitness) serve(origin, logKey string) error {
	skey, err := os.ReadFile(filepath.Join(w.dir, "witness.key"))
	if err != nil {
		return err
	}
	signer, err := record.NewCosigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return err
	}
	v, err := note.NewVerifier(logKey)
	if err != nil {
		return err
	}
	wit, err := witness.New(witness.Config{Signer: signer, StateDir: filepath.Join(w.dir, "state"), Logger: w.log,
		Logs: []witness.Log{{Origin: origin, Keys: []note.Verifier{v}}}})
	if err != nil {
		return err
	}
	w.srv = wit.Server(w.ln.Addr().String())
	go func() { w.errc <- w.srv.Serve(w.ln) }()
	return nil
}

// Close stops the witness.
func (w *devWitness) Close() error {
	if w.srv == nil {
		return w.ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return w.srv.Shutdown(ctx)
}
