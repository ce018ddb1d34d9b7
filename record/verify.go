package record

import (
	"bytes"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// Problem kinds found by a Verifier. They name what an auditor must look at.
const (
	ProblemMalformed    = "malformed"     // not a canonical entry
	ProblemMissing      = "missing"       // an index is absent: an entry was deleted
	ProblemOutOfOrder   = "out_of_order"  // an entry sits at the wrong position: reordered or inserted
	ProblemChainBroken  = "chain_broken"  // prev does not name the agent's previous entry: edited, deleted or inserted
	ProblemRootMismatch = "root_mismatch" // the entries do not hash to the signed root
	ProblemTruncated    = "truncated"     // fewer entries than the checkpoint commits to
	ProblemExtra        = "extra"         // more entries than the checkpoint commits to
)

// Problem is one finding, with the evidence an auditor needs.
type Problem struct {
	Kind    string `json:"kind"`
	Index   int64  `json:"index"` // position in the log, -1 when not about one entry
	Agent   string `json:"agent,omitempty"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Index < 0 {
		return fmt.Sprintf("%s: %s", p.Kind, p.Message)
	}
	return fmt.Sprintf("entry %d: %s: %s", p.Index, p.Kind, p.Message)
}

// MaxProblems bounds the findings kept; the count goes on.
const MaxProblems = 1000

// Verifier checks a stream of encoded entries, in log order: canonical form,
// contiguous indexes, each agent's prev chain, and (at Finish) the Merkle
// root against a checkpoint. Feed it with Add; it keeps O(agents + log n)
// state, so it scales to any log.
type Verifier struct {
	tree     Tree
	heads    map[string]headInfo
	problems []Problem
	count    int // all problems, including those past MaxProblems
	agents   int
}

type headInfo struct {
	hash  tlog.Hash
	index int64
}

// Add checks the next entry, which should sit at position v.Size().
func (v *Verifier) Add(data []byte) {
	pos := v.tree.Size()
	leaf := LeafHash(data)
	v.tree.AppendLeaf(leaf)
	e, err := Parse(data)
	if err != nil {
		v.add(Problem{Kind: ProblemMalformed, Index: pos, Message: err.Error()})
		return
	}
	switch {
	case e.Index > pos:
		v.add(Problem{Kind: ProblemMissing, Index: pos, Agent: e.Agent,
			Message: fmt.Sprintf("found entry %d here: entries %d..%d are missing or out of order", e.Index, pos, e.Index-1)})
	case e.Index < pos:
		v.add(Problem{Kind: ProblemOutOfOrder, Index: pos, Agent: e.Agent,
			Message: fmt.Sprintf("entry says index %d: it was moved or inserted", e.Index)})
	}
	if v.heads == nil {
		v.heads = make(map[string]headInfo)
	}
	head, seen := v.heads[e.Agent]
	want := ""
	if seen {
		want = HashString(head.hash)
	} else {
		v.agents++
	}
	if e.Prev != want {
		msg := "prev does not match the agent's previous entry"
		switch {
		case !seen:
			msg = "first entry of this agent in the log names a previous entry: earlier entries were deleted"
		case e.Prev == "":
			msg = fmt.Sprintf("entry starts a new chain, but entry %d came before it", head.index)
		default:
			msg = fmt.Sprintf("prev does not match entry %d, the agent's previous entry: it or an entry between them was edited, deleted or inserted", head.index)
		}
		v.add(Problem{Kind: ProblemChainBroken, Index: pos, Agent: e.Agent, Message: msg})
	}
	v.heads[e.Agent] = headInfo{hash: leaf, index: pos}
}

func (v *Verifier) add(p Problem) {
	v.count++
	if len(v.problems) < MaxProblems {
		v.problems = append(v.problems, p)
	}
}

// Size is the number of entries added.
func (v *Verifier) Size() int64 { return v.tree.Size() }

// Root is the Merkle root of the entries added so far.
func (v *Verifier) Root() tlog.Hash { return v.tree.Root() }

// Agents is the number of distinct agents seen.
func (v *Verifier) Agents() int { return v.agents }

// Finish compares what was added with a checkpoint (nil to skip) and
// returns every problem found.
func (v *Verifier) Finish(cp *Checkpoint) []Problem {
	if cp != nil {
		size := v.tree.Size()
		switch {
		case uint64(size) < cp.Size:
			v.add(Problem{Kind: ProblemTruncated, Index: -1,
				Message: fmt.Sprintf("the checkpoint commits to %d entries, only %d are present", cp.Size, size)})
		case uint64(size) > cp.Size:
			v.add(Problem{Kind: ProblemExtra, Index: -1,
				Message: fmt.Sprintf("%d entries present, the checkpoint commits to %d (verify against a newer checkpoint)", size, cp.Size)})
		default:
			if root := v.tree.Root(); !bytes.Equal(root[:], cp.Hash) {
				v.add(Problem{Kind: ProblemRootMismatch, Index: -1,
					Message: "the entries do not hash to the checkpoint's root: an entry was changed"})
			}
		}
	}
	return v.problems
}

// ProblemCount is the number of problems, including any not kept.
func (v *Verifier) ProblemCount() int { return v.count }
