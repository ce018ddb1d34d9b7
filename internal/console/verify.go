package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"golang.org/x/mod/sumdb/tlog"
)

// chainCheck is what the record page says about one agent's record: the
// checks of record.Verifier applied to the agent's own hash chain (each entry
// canonical, at its index, hashing to its stored leaf, naming the agent's
// previous entry), and whether the latest signed checkpoint covers the
// newest entry (an inclusion proof against its root).
type chainCheck struct {
	Entries  int
	Indexes  []int64 // log indexes of the agent's entries, in order
	Problems []string
	More     int  // problems not kept
	Timeout  bool // the check did not finish in time
	Newest   *store.Entry

	Checkpoint *checkpointCheck
}

type checkpointCheck struct {
	Size      int64
	At        time.Time
	SigCheck  bool   // the signature was checked with the log key
	Covers    bool   // the checkpoint's tree includes the newest entry
	Pending   bool   // the newest entry is newer than the checkpoint
	Problem   string // the checkpoint or the inclusion proof failed
	RootShort string
}

// OK says whether every check that ran passed.
func (v *chainCheck) OK() bool {
	return len(v.Problems) == 0 && !v.Timeout && (v.Checkpoint == nil || v.Checkpoint.Problem == "")
}

const maxChainProblems = 20

func (v *chainCheck) problem(format string, args ...any) {
	if len(v.Problems) >= maxChainProblems {
		v.More++
		return
	}
	v.Problems = append(v.Problems, fmt.Sprintf(format, args...))
}

// verifyChain checks agent's record in st. logKey, when set, checks the
// checkpoint's signature.
func verifyChain(ctx context.Context, st store.Store, logKey, agent string) (*chainCheck, error) {
	v := &chainCheck{}
	prev := ""
	after := int64(-1)
	const batch = 1000
	for {
		if ctx.Err() != nil {
			v.Timeout = true
			return v, nil
		}
		list, err := st.AgentEntries(ctx, agent, after, batch)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				v.Timeout = true
				return v, nil
			}
			return nil, err
		}
		for i := range list {
			e := &list[i]
			v.Entries++
			v.Indexes = append(v.Indexes, e.Index)
			leaf := record.LeafHash(e.Data)
			if leaf != e.Leaf {
				v.problem("entry %d: its bytes do not hash to the leaf the log stores: it was edited", e.Index)
			}
			pe, err := record.Parse(e.Data)
			switch {
			case err != nil:
				v.problem("entry %d: %s: %v", e.Index, record.ProblemMalformed, err)
			default:
				if pe.Index != e.Index {
					v.problem("entry %d: %s: the entry says index %d", e.Index, record.ProblemOutOfOrder, pe.Index)
				}
				if pe.Agent != agent {
					v.problem("entry %d: the entry names another agent", e.Index)
				}
				if pe.Prev != prev {
					if prev == "" {
						v.problem("entry %d: %s: the agent's first entry names a previous entry: earlier entries were deleted", e.Index, record.ProblemChainBroken)
					} else {
						v.problem("entry %d: %s: it does not name the agent's previous entry: an entry was edited, deleted or inserted", e.Index, record.ProblemChainBroken)
					}
				}
			}
			prev = record.HashString(leaf)
			v.Newest = e
		}
		if len(list) < batch {
			break
		}
		after = list[len(list)-1].Index
	}
	cp, err := st.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return nil, err
	}
	v.Checkpoint = checkCheckpoint(ctx, st, logKey, cp, v.Newest)
	return v, nil
}

func checkCheckpoint(ctx context.Context, st store.Store, logKey string, cp *store.Checkpoint, newest *store.Entry) *checkpointCheck {
	out := &checkpointCheck{Size: cp.Size, At: cp.CreatedAt}
	var root tlog.Hash
	if logKey != "" {
		body, _, err := record.OpenCheckpoint(cp.Signed, logKey)
		if err != nil {
			out.Problem = "the latest checkpoint does not verify with the log key: " + err.Error()
			return out
		}
		if int64(body.Size) != cp.Size {
			out.Problem = "the latest checkpoint's signed size differs from the stored one"
			return out
		}
		out.SigCheck = true
		copy(root[:], body.Hash)
	} else {
		// Without the key, read the root from the note's text only.
		if err := readUnverifiedRoot(cp.Signed, &root); err != nil {
			out.Problem = "the latest checkpoint cannot be read: " + err.Error()
			return out
		}
	}
	out.RootShort = record.HashString(root)[:16]
	if newest == nil {
		return out
	}
	if newest.Index >= cp.Size {
		out.Pending = true
		return out
	}
	proof, err := tlog.ProveRecord(cp.Size, newest.Index, store.HashReader(ctx, st))
	if err != nil {
		out.Problem = "no inclusion proof of the newest entry: " + err.Error()
		return out
	}
	if err := tlog.CheckRecord(proof, cp.Size, root, newest.Index, record.LeafHash(newest.Data)); err != nil {
		out.Problem = fmt.Sprintf("entry %d is not in the tree the latest checkpoint signs", newest.Index)
		return out
	}
	out.Covers = true
	return out
}

// readUnverifiedRoot reads the root hash of a signed checkpoint's text
// without checking its signature.
func readUnverifiedRoot(signed []byte, root *tlog.Hash) error {
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return errors.New("not a signed note")
	}
	var cp record.Checkpoint
	if _, err := cp.Unmarshal(append(text, '\n')); err != nil {
		return err
	}
	if len(cp.Hash) != tlog.HashSize {
		return errors.New("root hash of the wrong size")
	}
	copy(root[:], cp.Hash)
	return nil
}
