package publish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/internal/witness"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// Witness is a witness the publisher asks for cosignatures: the URL prefix
// its add-checkpoint endpoint lives under, and its public key.
type Witness struct {
	URL  string
	VKey string
}

// witnessClient speaks C2SP tlog-witness to one witness and remembers the
// size of the checkpoint it last cosigned.
type witnessClient struct {
	w    Witness
	name string
	http *http.Client

	mu   sync.Mutex
	size int64 // the witness's latest cosigned size; -1 when unknown
}

// MaxCosignatureSkew is how far a cosignature's timestamp may be from this
// server's clock. Auditors read the timestamp as when the witness saw the
// checkpoint; one far off is a witness with a wrong clock or a replayed
// answer, and is not put in the bucket.
const MaxCosignatureSkew = 10 * time.Minute

// maxAnswer bounds what is read of a witness's answer: a cosignature line
// is about a hundred bytes, and a witness that answers more is not trusted
// with the memory it asks for.
const maxAnswer = 64 << 10

// ErrWitnessAhead means a witness has cosigned a larger tree than the one
// offered: the log was rolled back (a restored database), or forked.
var ErrWitnessAhead = errors.New("witness has cosigned a larger tree than this log has")

// cosign asks the witness to cosign signed (of the given size), proving
// consistency from whatever size it last cosigned. prove returns the
// consistency proof from an older size to size. It returns the verified
// cosignature lines.
func (c *witnessClient) cosign(ctx context.Context, signed []byte, size int64, logKey string,
	prove func(old int64) (tlog.TreeProof, error)) ([]string, error) {
	c.mu.Lock()
	old := c.size
	c.mu.Unlock()
	switch {
	case old < 0:
		old = 0
	case old > size:
		// A size learnt from an earlier answer (a 409) that this tree
		// cannot reach. Ask again rather than trust it for good: the
		// witness's 409 says where it is now, and a garbled answer
		// must not stop cosigning after the witness is right again.
		old = size
	}
	for attempt := 0; attempt < 2; attempt++ {
		if old > size {
			return nil, fmt.Errorf("%w: witness %s is at size %d, this checkpoint has %d", ErrWitnessAhead, c.name, old, size)
		}
		var proof tlog.TreeProof
		if old > 0 && old < size {
			var err error
			if proof, err = prove(old); err != nil {
				return nil, fmt.Errorf("witness %s: consistency proof from %d to %d: %w", c.name, old, size, err)
			}
		}
		body := (&witness.AddCheckpoint{OldSize: old, Proof: proof, Checkpoint: signed}).Marshal()
		req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimSuffix(c.w.URL, "/")+"/add-checkpoint", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", c.name, err) // the client's error hides a URL's password
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("witness %s: reading its answer: %w", c.name, err)
		}
		if len(data) > maxAnswer {
			return nil, fmt.Errorf("witness %s: %s with an answer larger than %d bytes", c.name, resp.Status, maxAnswer)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			lines, err := c.verify(signed, data, logKey)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.size = size
			c.mu.Unlock()
			return lines, nil
		case http.StatusConflict:
			n, err := witness.ParseSize(data)
			if err != nil {
				return nil, fmt.Errorf("witness %s: 409 without a size: %w", c.name, err)
			}
			c.mu.Lock()
			c.size = n
			c.mu.Unlock()
			if n == old {
				// Same size, another root: the witness saw a different tree.
				return nil, fmt.Errorf("witness %s refuses: it cosigned another tree of size %d (a fork)", c.name, n)
			}
			old = n
			continue
		default:
			return nil, fmt.Errorf("witness %s: %s: %s", c.name, resp.Status, excerpt(data))
		}
	}
	return nil, fmt.Errorf("witness %s: its size keeps changing", c.name)
}

// verify returns one signature line of the answer that is a valid
// cosignature by this witness's key. Each line is checked on its own: a
// note verifier checks only the first signature of a key and skips the
// rest, so lines checked together could carry a bad one into the bucket.
// A line by this key that does not verify, or whose timestamp is more than
// MaxCosignatureSkew off this server's clock, refuses the whole answer;
// lines by other keys (even under this name) are dropped.
func (c *witnessClient) verify(signed, answer []byte, logKey string) ([]string, error) {
	var good []string
	for _, l := range strings.SplitAfter(string(answer), "\n") {
		if !strings.HasPrefix(l, "— "+c.name+" ") || !strings.HasSuffix(l, "\n") {
			continue
		}
		cs, err := record.OpenCosigned(record.AppendSignatures(signed, l), logKey, []string{c.w.VKey})
		switch {
		case err != nil: // signed alone opens: the line is malformed
			return nil, fmt.Errorf("witness %s answered a malformed signature line", c.name)
		case len(cs.Invalid) != 0:
			return nil, fmt.Errorf("witness %s answered with a cosignature that does not verify", c.name)
		case len(cs.Cosigs) == 1 && len(good) == 0:
			if off := time.Since(cs.Cosigs[0].Time); off > MaxCosignatureSkew || off < -MaxCosignatureSkew {
				return nil, fmt.Errorf("witness %s cosigned at %s, %s off this server's clock (at most %s): its clock is wrong, or the answer is a replay",
					c.name, cs.Cosigs[0].Time.Format(time.RFC3339), off.Round(time.Second).Abs(), MaxCosignatureSkew)
			}
			good = append(good, l)
		}
	}
	if len(good) == 0 {
		return nil, fmt.Errorf("witness %s answered 200 without a cosignature by its key", c.name)
	}
	return good, nil
}

// excerpt quotes the start of a witness's answer for an error message: a
// garbage answer must neither flood the logs nor put control bytes in them.
func excerpt(b []byte) string {
	const n = 120
	b = bytes.TrimSpace(b)
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "..."
	}
	return strconv.Quote(string(b))
}

// cosignQuorum asks every witness at once and returns the cosignature lines
// of those that cosigned, and the errors of the others.
func cosignQuorum(ctx context.Context, clients []*witnessClient, timeout time.Duration, signed []byte, size int64, logKey string,
	prove func(old int64) (tlog.TreeProof, error)) (lines []string, errs map[string]error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got := make([][]string, len(clients))
	failed := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], failed[i] = c.cosign(ctx, signed, size, logKey, prove)
		}()
	}
	wg.Wait()
	errs = map[string]error{}
	for i, c := range clients { // in the order configured, so the note is stable
		if failed[i] != nil {
			errs[c.name] = failed[i]
			continue
		}
		lines = append(lines, got[i]...)
	}
	return lines, errs
}
