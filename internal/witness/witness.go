// Package witness is the server behind `arx witness serve`: an independent
// witness speaking C2SP tlog-witness (https://c2sp.org/tlog-witness). It
// cosigns a log's checkpoint only when it is consistent with the latest one
// it cosigned for that log, and it makes that new checkpoint durable before
// it answers, so that neither a rollback nor a fork of a log it witnessed
// can ever get its cosignature.
package witness

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/record"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Config configures a witness. cmd/arx maps flags and files into it.
type Config struct {
	// Signer makes the cosignatures (record.NewCosigner).
	Signer note.Signer
	// Logs are the logs witnessed, by origin.
	Logs []Log
	// StateDir keeps the latest cosigned checkpoint of each log.
	StateDir string
	Logger   *slog.Logger
}

// Log is one witnessed log: its origin and the keys its checkpoints are
// signed with.
type Log struct {
	Origin string
	Keys   []note.Verifier
}

// MaxBodySize bounds an add-checkpoint request body. A checkpoint with a
// hundred signatures and 63 proof lines is well below it.
const MaxBodySize = 64 << 10

// Witness cosigns checkpoints.
type Witness struct {
	signer note.Signer
	logs   map[string]*logState
	state  *stateDir
	log    *slog.Logger
}

type logState struct {
	mu   sync.Mutex // held from the size check to the durable update
	keys note.Verifiers
}

// New opens the state directory and returns a witness.
func New(cfg Config) (*Witness, error) {
	if cfg.Signer == nil {
		return nil, errors.New("witness: a signing key is required")
	}
	if len(cfg.Logs) == 0 {
		return nil, errors.New("witness: no logs to witness")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	w := &Witness{signer: cfg.Signer, logs: map[string]*logState{}, state: st, log: cfg.Logger}
	for _, l := range cfg.Logs {
		if l.Origin == "" || len(l.Keys) == 0 {
			return nil, fmt.Errorf("witness: log %q needs an origin and a key", l.Origin)
		}
		if _, dup := w.logs[l.Origin]; dup {
			return nil, fmt.Errorf("witness: log %q is configured twice", l.Origin)
		}
		w.logs[l.Origin] = &logState{keys: note.VerifierList(l.Keys...)}
	}
	return w, nil
}

// Name is the witness's key name.
func (w *Witness) Name() string { return w.signer.Name() }

// Error is a refusal with the HTTP status the spec assigns to it.
type Error struct {
	Status int
	Msg    string
	Size   int64 // for 409: the size of the latest cosigned checkpoint
}

func (e *Error) Error() string { return e.Msg }

func refuse(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Add checks an add-checkpoint request and, when it holds, records the new
// checkpoint durably and returns the cosignature line(s). A refusal is an
// *Error with its HTTP status.
func (w *Witness) Add(req *AddCheckpoint) ([]byte, error) {
	origin, _, _ := bytes.Cut(req.Checkpoint, []byte("\n"))
	l := w.logs[string(origin)]
	if l == nil {
		return nil, refuse(http.StatusNotFound, "unknown log %q", origin)
	}
	n, err := record.OpenNote(req.Checkpoint, l.keys)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return nil, refuse(http.StatusForbidden, "checkpoint is not signed by a key of log %q", origin)
		}
		return nil, refuse(http.StatusBadRequest, "checkpoint is not a signed note: %v", err)
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil || cp.Origin != string(origin) || len(cp.Hash) != tlog.HashSize || cp.Size > 1<<62 {
		return nil, refuse(http.StatusBadRequest, "checkpoint body is malformed")
	}
	size, root := int64(cp.Size), tlog.Hash(cp.Hash)
	if req.OldSize > size {
		return nil, refuse(http.StatusBadRequest, "old size %d is larger than the checkpoint's size %d", req.OldSize, size)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	cur, err := w.state.load(cp.Origin)
	if err != nil {
		return nil, err
	}
	if req.OldSize != cur.Size {
		return nil, &Error{Status: http.StatusConflict, Size: cur.Size,
			Msg: fmt.Sprintf("old size %d is not the size of the latest cosigned checkpoint", req.OldSize)}
	}
	if size == 0 && root != emptyRoot {
		return nil, refuse(http.StatusUnprocessableEntity, "a checkpoint of size 0 must have the empty tree's root")
	}
	switch {
	case req.OldSize == 0:
		if len(req.Proof) != 0 {
			return nil, refuse(http.StatusUnprocessableEntity, "the proof must be empty when the old size is 0")
		}
	case req.OldSize == size:
		if len(req.Proof) != 0 {
			return nil, refuse(http.StatusUnprocessableEntity, "a proof between equal sizes must be empty")
		}
		if root != cur.Root {
			w.log.Warn("fork: checkpoint of the cosigned size with another root", "origin", cp.Origin, "size", size)
			return nil, refuse(http.StatusUnprocessableEntity, "checkpoint of size %d has another root than the one cosigned: a fork", size)
		}
	default:
		if err := tlog.CheckTree(req.Proof, size, root, req.OldSize, cur.Root); err != nil {
			w.log.Warn("inconsistent checkpoint refused", "origin", cp.Origin, "old", req.OldSize, "size", size)
			return nil, refuse(http.StatusUnprocessableEntity, "the consistency proof from size %d to %d does not verify", req.OldSize, size)
		}
	}
	line, err := record.Cosign(w.signer, n.Text)
	if err != nil {
		return nil, err
	}
	// Kept as served to monitors: the checkpoint with the log's signatures
	// the witness verified and the cosignature it answers.
	kept := record.AppendSignatures(verifiedOnly(req.Checkpoint, n), line)
	if err := w.state.store(cp.Origin, state{Size: size, Root: root, Checkpoint: kept}); err != nil {
		return nil, err
	}
	w.log.Info("cosigned", "origin", cp.Origin, "size", size)
	return []byte(line), nil
}

// emptyRoot is the root of the empty tree: SHA-256 of nothing (RFC 6962).
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

// verifiedOnly is signed with only the signatures n verified (the log's):
// what others added is not the witness's to keep.
func verifiedOnly(signed []byte, n *note.Note) []byte {
	out := []byte(n.Text + "\n")
	for _, sig := range n.Sigs {
		out = fmt.Appendf(out, "— %s %s\n", sig.Name, sig.Base64)
	}
	return out
}

// hasOwnCosignature reports whether a kept checkpoint carries a line of
// the witness's key (state written before the witness kept its answers
// does not).
func (w *Witness) hasOwnCosignature(signed []byte) bool {
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 {
		return false
	}
	prefix := "— " + w.signer.Name() + " "
	for line := range strings.Lines(string(signed[i+2:])) {
		b64, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), prefix)
		if !ok {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && len(sig) >= 4 && binary.BigEndian.Uint32(sig) == w.signer.KeyHash() {
			return true
		}
	}
	return false
}

// Latest returns the latest checkpoint the witness cosigned for origin
// (nil when none).
func (w *Witness) Latest(origin string) ([]byte, error) {
	if w.logs[origin] == nil {
		return nil, refuse(http.StatusNotFound, "unknown log %q", origin)
	}
	s, err := w.state.load(origin)
	return s.Checkpoint, err
}

// Handler serves the C2SP tlog-witness API with one prefix for submission
// and monitoring: POST /add-checkpoint, and GET /<origin hash>/checkpoint,
// the latest checkpoint the witness cosigned for a log, with its
// cosignature. GET /latest-checkpoint?origin=ORIGIN answers the same
// (ARX's name for it before the spec had one).
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", w.serveAdd)
	mux.HandleFunc("GET /latest-checkpoint", w.serveLatest)
	mux.HandleFunc("GET /{origin}/checkpoint", w.serveMonitor)
	return mux
}

// OriginHash is how the monitoring endpoint names a log: the SHA-256 of
// its origin, lowercase hex.
func OriginHash(origin string) string {
	h := sha256.Sum256([]byte(origin))
	return hex.EncodeToString(h[:])
}

// serveMonitor serves GET /<origin hash>/checkpoint (C2SP tlog-witness,
// monitor retrieval): the latest checkpoint the witness cosigned for the
// log, with the log's signatures it verified and the cosignature it
// answered; 404 for a log it does not witness or never cosigned.
func (w *Witness) serveMonitor(rw http.ResponseWriter, r *http.Request) {
	want := r.PathValue("origin")
	for o := range w.logs {
		if OriginHash(o) == want {
			w.writeLatest(rw, o)
			return
		}
	}
	http.Error(rw, "unknown log", http.StatusNotFound)
}

func (w *Witness) writeLatest(rw http.ResponseWriter, origin string) {
	l := w.logs[origin]
	if l == nil {
		http.Error(rw, "unknown log", http.StatusNotFound)
		return
	}
	l.mu.Lock()
	cur, err := w.state.load(origin)
	l.mu.Unlock()
	switch {
	case err != nil:
		w.log.Error("monitor checkpoint", "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	case cur.Checkpoint == nil:
		http.Error(rw, "no checkpoint of this log cosigned yet", http.StatusNotFound)
		return
	}
	cp := cur.Checkpoint
	if !w.hasOwnCosignature(cp) { // kept before the witness kept its answers
		i := bytes.LastIndex(cp, []byte("\n\n"))
		line, err := record.Cosign(w.signer, string(cp[:i+1]))
		if err != nil {
			http.Error(rw, "internal error", http.StatusInternalServerError)
			return
		}
		cp = record.AppendSignatures(cp, line)
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-cache")
	rw.Write(cp)
}

// serveLatest is the monitoring answer under the name ARX used before the
// spec defined one (GET /latest-checkpoint?origin=ORIGIN).
func (w *Witness) serveLatest(rw http.ResponseWriter, r *http.Request) {
	w.writeLatest(rw, r.URL.Query().Get("origin"))
}

func (w *Witness) serveAdd(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxBodySize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(rw, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "cannot read the request body", http.StatusBadRequest)
		return
	}
	req, err := ParseAddCheckpoint(body)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	sig, err := w.Add(req)
	var e *Error
	switch {
	case errors.As(err, &e) && e.Status == http.StatusConflict:
		rw.Header().Set("Content-Type", ContentTypeSize)
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", e.Size)
	case errors.As(err, &e):
		http.Error(rw, e.Msg, e.Status)
	case err != nil:
		w.log.Error("add-checkpoint", "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
	default:
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		rw.Write(sig)
	}
}

// Server returns an http.Server for the witness with the timeouts and
// limits every server here keeps.
func (w *Witness) Server(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           w.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelWarn),
	}
}

// ParseSize reads a 409 answer's body.
func ParseSize(body []byte) (int64, error) {
	s, ok := bytes.CutSuffix(body, []byte("\n"))
	n, err := strconv.ParseInt(string(s), 10, 64)
	if !ok || err != nil || n < 0 {
		if len(body) > 40 { // a garbage answer must not flood an error message
			return 0, fmt.Errorf("witness: %q... is not a tree size", body[:40])
		}
		return 0, fmt.Errorf("witness: %q is not a tree size", body)
	}
	return n, nil
}
