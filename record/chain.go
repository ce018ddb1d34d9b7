package record

import (
	"fmt"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"
)

// ChainChecker checks entries in log order for what Verifier checks entry
// by entry (canonical form, each entry at its index, each agent's prev
// chain) but leaves the Merkle tree to its caller, which hashes the leaves
// itself: the bucket auditor compares them with published tiles on the way.
// In the steady state it allocates nothing per entry.
type ChainChecker struct {
	heads    map[string]*chainHead
	agents   int
	problems []Problem
	count    int
}

type chainHead struct {
	hash  tlog.Hash
	index int64
}

// Check checks data, the entry at log position pos with leaf hash leaf. It
// reports whether the entry is well formed (its problems, if any, are
// recorded either way).
func (c *ChainChecker) Check(pos int64, data []byte, leaf tlog.Hash) bool {
	_, ok := c.CheckRef(pos, data, leaf)
	return ok
}

// CheckRef is Check, and returns what ScanEntry read of the entry (its
// type, for a caller that checks some types further).
func (c *ChainChecker) CheckRef(pos int64, data []byte, leaf tlog.Hash) (r EntryRef, ok bool) {
	r, err := ScanEntry(data)
	if err != nil {
		msg := err.Error()
		if _, perr := Parse(data); perr != nil {
			msg = perr.Error() // the precise reason, off the fast path
		}
		c.Report(Problem{Kind: ProblemMalformed, Index: pos, Message: msg})
		return r, false
	}
	switch {
	case r.Index > pos:
		c.Report(Problem{Kind: ProblemMissing, Index: pos, Agent: agentName(r.Agent),
			Message: fmt.Sprintf("found entry %d here: entries %d..%d are missing or out of order", r.Index, pos, r.Index-1)})
	case r.Index < pos:
		c.Report(Problem{Kind: ProblemOutOfOrder, Index: pos, Agent: agentName(r.Agent),
			Message: fmt.Sprintf("entry says index %d: it was moved or inserted", r.Index)})
	}
	if c.heads == nil {
		c.heads = make(map[string]*chainHead)
	}
	head := c.heads[string(r.Agent)]
	if head == nil {
		c.agents++
		if len(r.Prev) != 0 {
			c.Report(Problem{Kind: ProblemChainBroken, Index: pos, Agent: agentName(r.Agent),
				Message: "first entry of this agent in the log names a previous entry: earlier entries were deleted"})
		}
		c.heads[string(r.Agent)] = &chainHead{hash: leaf, index: pos}
		return r, true
	}
	if !r.PrevIs(head.hash) {
		msg := fmt.Sprintf("prev does not match entry %d, the agent's previous entry: it or an entry between them was edited, deleted or inserted", head.index)
		if len(r.Prev) == 0 {
			msg = fmt.Sprintf("entry starts a new chain, but entry %d came before it", head.index)
		}
		c.Report(Problem{Kind: ProblemChainBroken, Index: pos, Agent: agentName(r.Agent), Message: msg})
	}
	head.hash, head.index = leaf, pos
	return r, true
}

// Report records a problem found by the caller, under the same bound.
func (c *ChainChecker) Report(p Problem) {
	c.count++
	if len(c.problems) < MaxProblems {
		c.problems = append(c.problems, p)
	}
}

// Problems returns the problems kept (at most MaxProblems).
func (c *ChainChecker) Problems() []Problem { return c.problems }

// ProblemCount is the number of problems, including any not kept.
func (c *ChainChecker) ProblemCount() int { return c.count }

// Agents is the number of distinct agents seen.
func (c *ChainChecker) Agents() int { return c.agents }

// agentName turns the escaped agent string back into text for a report.
func agentName(escaped []byte) string {
	s, err := strconv.Unquote(`"` + string(escaped) + `"`)
	if err != nil {
		return string(escaped)
	}
	return s
}
