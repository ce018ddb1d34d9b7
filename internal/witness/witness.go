// Package witness is the server behind `arx witness serve`: an independent
// witness speaking C2SP tlog-witness (https://c2sp.org/tlog-witness). It
// cosigns a log's checkpoint only when it is consistent with the latest one
// it cosigned for that log, and it makes that new checkpoint durable before
// it answers, so that neither a rollback nor a fork of a log it witnessed
// can ever get its cosignature.
package witness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
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
	n, err := note.Open(req.Checkpoint, l.keys)
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
	switch {
	case req.OldSize == size:
		if len(req.Proof) != 0 {
			return nil, refuse(http.StatusUnprocessableEntity, "a proof between equal sizes must be empty")
		}
		if size > 0 && root != cur.Root {
			w.log.Warn("fork: checkpoint of the cosigned size with another root", "origin", cp.Origin, "size", size)
			return nil, &Error{Status: http.StatusConflict, Size: cur.Size,
				Msg: fmt.Sprintf("checkpoint of size %d has another root than the one cosigned: a fork", size)}
		}
	case req.OldSize == 0:
		if len(req.Proof) != 0 {
			return nil, refuse(http.StatusBadRequest, "the proof must be empty when the old size is 0")
		}
	default:
		if err := tlog.CheckTree(req.Proof, size, root, req.OldSize, cur.Root); err != nil {
			w.log.Warn("inconsistent checkpoint refused", "origin", cp.Origin, "old", req.OldSize, "size", size)
			return nil, refuse(http.StatusUnprocessableEntity, "the consistency proof from size %d to %d does not verify", req.OldSize, size)
		}
	}
	if err := w.state.store(cp.Origin, state{Size: size, Root: root, Checkpoint: req.Checkpoint}); err != nil {
		return nil, err
	}
	line, err := record.Cosign(w.signer, n.Text)
	if err != nil {
		return nil, err
	}
	w.log.Info("cosigned", "origin", cp.Origin, "size", size)
	return []byte(line), nil
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

// Handler serves POST /add-checkpoint (C2SP tlog-witness) and, for
// auditors, GET /latest-checkpoint?origin=ORIGIN: the latest checkpoint the
// witness cosigned for that log, cosigned afresh (a cosignature says "as of
// this time, this is the largest tree I have seen"). The spec leaves that
// monitoring call open; this one is ARX's.
func (w *Witness) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /add-checkpoint", w.serveAdd)
	mux.HandleFunc("GET /latest-checkpoint", w.serveLatest)
	return mux
}

func (w *Witness) serveLatest(rw http.ResponseWriter, r *http.Request) {
	origin := r.URL.Query().Get("origin")
	cp, err := w.Latest(origin)
	var e *Error
	switch {
	case errors.As(err, &e):
		http.Error(rw, e.Msg, e.Status)
		return
	case err != nil:
		w.log.Error("latest-checkpoint", "err", err)
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	case cp == nil:
		http.Error(rw, "no checkpoint of this log cosigned yet", http.StatusNotFound)
		return
	}
	i := bytes.LastIndex(cp, []byte("\n\n"))
	if i < 0 {
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	line, err := record.Cosign(w.signer, string(cp[:i+1]))
	if err != nil {
		http.Error(rw, "internal error", http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-cache")
	rw.Write(record.AppendSignatures(cp, line))
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
