package audit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/witness"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Asking a witness what it saw, with the calls of c2sp.org/tlog-witness
// only, so that any witness of the ecosystem answers (litewitness, ARX's
// own, others):
//
//  1. GET <url>/<sha256 of the origin>/checkpoint (monitor retrieval): the
//     latest checkpoint it cosigned, with its cosignature. The log must
//     extend it.
//  2. When that is not served (404: never cosigned, or the witness does not
//     offer it), POST <url>/add-checkpoint with the bucket's checkpoint and
//     the bucket's size as the old size. The witness answers with a
//     cosignature when that is the tree it last cosigned; with 409 and its
//     size otherwise. A larger size is a rollback of the bucket; a smaller
//     one is asked again with a consistency proof from the bucket's tiles,
//     which the witness checks against the tree it cosigned (422: a fork).
//
// The second way can advance the witness to the bucket's checkpoint: a
// witness cosigns only a checkpoint the log signed and that extends what
// it saw, so that is what the log would have asked of it anyway.
//
// Anything else (a 404 to add-checkpoint, a refusal of the log's key, an
// answer that is not the spec's, no answer) is an error naming the URL:
// never "nothing seen".

// WitnessTimeout bounds each exchange with a witness.
const WitnessTimeout = 15 * time.Second

// maxWitnessAnswer bounds what is read of a witness's answer.
const maxWitnessAnswer = 64 << 10

// AskWitness asks the witness at base (its URL prefix) what it saw of the
// log whose checkpoint the bucket src holds, for Options.Seen. hc nil is
// http.DefaultClient.
func AskWitness(ctx context.Context, hc *http.Client, base string, src Source, opts Options) (Seen, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	base = strings.TrimSuffix(base, "/")
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return Seen{}, fmt.Errorf("witness %s: not an http(s) URL", inert.Text(base))
	}
	origin, _, _ := strings.Cut(opts.LogKey, "+")
	w := witnessAsker{hc: hc, base: base, opts: opts}

	// 1. The checkpoint it serves to monitors.
	code, body, err := w.do(ctx, "GET", "/"+witness.OriginHash(origin)+"/checkpoint", nil)
	if err != nil {
		return Seen{}, err
	}
	if code == http.StatusOK {
		return w.seen(body, "as the latest it saw")
	}
	if code != http.StatusNotFound {
		return Seen{}, w.unexpected("GET its checkpoint", code, body)
	}

	// 2. add-checkpoint with the bucket's checkpoint.
	signed, err := src.Get(ctx, record.CheckpointPath)
	if err != nil {
		return Seen{}, fmt.Errorf("witness %s: cannot ask it without the bucket's checkpoint: %w", inert.Text(base), err)
	}
	cp, _, err := record.OpenCheckpoint(signed, opts.LogKey)
	if err != nil {
		return Seen{}, fmt.Errorf("witness %s: cannot ask it about a checkpoint the log did not sign (the audit says more): %w", inert.Text(base), err)
	}
	size, root := int64(cp.Size), tlog.Hash(cp.Hash)
	logSigned := signed // the witness ignores signatures of keys it does not know
	code, body, err = w.add(ctx, size, nil, logSigned)
	if err != nil {
		return Seen{}, err
	}
	if code == http.StatusOK {
		return w.seen(record.AppendSignatures(logSigned, string(body)), "the bucket's checkpoint, as the latest it saw")
	}
	if code == http.StatusUnprocessableEntity {
		return Seen{Who: w.who("refused the bucket's checkpoint: it has cosigned another tree of the same size"), Size: size, Fork: true}, nil
	}
	if code != http.StatusConflict {
		return Seen{}, w.unexpected("add-checkpoint", code, body)
	}
	have, err := witness.ParseSize(body)
	if err != nil {
		return Seen{}, fmt.Errorf("witness %s: its 409 answer: %w", inert.Text(base), err)
	}
	if have > size {
		return Seen{Who: w.who(fmt.Sprintf("says it cosigned a tree of %d entries", have)), Size: have}, nil
	}
	var proof tlog.TreeProof
	if have > 0 {
		proof, err = tlog.ProveTree(size, have, tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, &tileReader{ctx: ctx, src: src}))
		if err != nil {
			return Seen{}, fmt.Errorf("witness %s: the bucket's tiles cannot prove its checkpoint extends the %d entries the witness cosigned (the audit says more): %w", inert.Text(base), have, err)
		}
	}
	code, body, err = w.add(ctx, have, proof, logSigned)
	if err != nil {
		return Seen{}, err
	}
	switch code {
	case http.StatusOK:
		return w.seen(record.AppendSignatures(logSigned, string(body)), fmt.Sprintf("the bucket's checkpoint, after checking it extends the %d entries it cosigned before", have))
	case http.StatusUnprocessableEntity:
		return Seen{Who: w.who(fmt.Sprintf("refused the bucket's checkpoint as inconsistent with the tree of %d entries it cosigned", have)), Size: have, Fork: true}, nil
	case http.StatusConflict:
		return Seen{}, fmt.Errorf("witness %s: its tree changed while it was asked (409 twice); run the audit again", inert.Text(base))
	}
	return Seen{}, w.unexpected("add-checkpoint", code, body)
}

type witnessAsker struct {
	hc   *http.Client
	base string
	opts Options
}

func (w witnessAsker) who(what string) string {
	return "witness " + w.base + " " + what
}

func (w witnessAsker) add(ctx context.Context, old int64, proof tlog.TreeProof, signed []byte) (int, []byte, error) {
	req := witness.AddCheckpoint{OldSize: old, Proof: proof, Checkpoint: signed}
	return w.do(ctx, "POST", "/add-checkpoint", req.Marshal())
}

func (w witnessAsker) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, WitnessTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.base+path, rd)
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s: %w", inert.Text(w.base), err)
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s cannot be asked: %w", inert.Text(w.base), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxWitnessAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("witness %s: reading its answer: %w", inert.Text(w.base), err)
	}
	return resp.StatusCode, b, nil
}

// seen checks a checkpoint the witness cosigned: signed by the log, and
// cosigned by a witness the auditor trusts.
func (w witnessAsker) seen(signed []byte, what string) (Seen, error) {
	cs, err := record.OpenCosigned(signed, w.opts.LogKey, w.opts.WitnessKeys)
	if err != nil {
		return Seen{}, fmt.Errorf("witness %s: its checkpoint: %w", inert.Text(w.base), err)
	}
	if len(cs.Invalid) > 0 {
		return Seen{}, fmt.Errorf("witness %s: the cosignature of %s on its checkpoint does not verify", inert.Text(w.base), inert.Text(cs.Invalid[0]))
	}
	if len(cs.Cosigs) == 0 {
		return Seen{}, &WitnessKeyError{URL: w.base}
	}
	last := cs.Cosigs[len(cs.Cosigs)-1]
	return Seen{Who: fmt.Sprintf("witness %s (%s) cosigned (%s, at %s)", last.Witness, w.base, what, last.Time.Format(time.RFC3339)),
		Checkpoint: signed, Witness: last.Witness, Time: last.Time}, nil
}

// WitnessKeyError: the witness answered, but without the cosignature of a
// key the auditor trusts.
type WitnessKeyError struct{ URL string }

func (e *WitnessKeyError) Error() string {
	return fmt.Sprintf("witness %s answered without the cosignature of a witness you trust", inert.Text(e.URL))
}

func (w witnessAsker) unexpected(call string, code int, body []byte) error {
	why := ""
	switch code {
	case http.StatusNotFound:
		why = ": it does not witness this log, or the URL is not a C2SP witness's prefix"
	case http.StatusForbidden:
		why = ": it does not accept the log's signature (is the log's key configured there?)"
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return fmt.Errorf("witness %s: %s answered HTTP %d%s: %s", inert.Text(w.base), call, code, why, inert.Text(msg))
}
