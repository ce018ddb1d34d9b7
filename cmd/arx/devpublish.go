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
	dir    string
	vkey   string
	url    string
	signer note.Signer
	ln     net.Listener
	srv    *http.Server
	log    *slog.Logger
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
	_, kerr := os.Stat(keyFile)
	_, perr := os.Stat(pubFile)
	if errors.Is(kerr, fs.ErrNotExist) || errors.Is(perr, fs.ErrNotExist) { // new, or a key half written
		skey, vkey, err := record.GenerateWitnessKey(devWitnessName)
		if err != nil {
			return nil, err
		}
		if err := writeWitnessKey(keyFile, pubFile, skey, vkey); err != nil {
			return nil, err
		}
	}
	skey, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("the dev witness's key: %w", err)
	}
	vkey, err := os.ReadFile(pubFile)
	if err != nil {
		return nil, fmt.Errorf("the dev witness's key: %w", err)
	}
	// Parsed now, so a damaged key fails before the runtime starts.
	signer, err := record.NewCosigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, fmt.Errorf("the dev witness's key %s: %w", keyFile, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &devWitness{dir: dir, vkey: strings.TrimSpace(string(vkey)), url: "http://" + ln.Addr().String(), signer: signer, ln: ln, log: log}, nil
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
	v, err := note.NewVerifier(logKey)
	if err != nil {
		return err
	}
	wit, err := witness.New(witness.Config{Signer: w.signer, StateDir: filepath.Join(w.dir, "state"), Logger: w.log,
		Logs: []witness.Log{{Origin: origin, Keys: []note.Verifier{v}}}})
	if err != nil {
		return err
	}
	w.srv = wit.Server(w.ln.Addr().String())
	go w.srv.Serve(w.ln)
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
