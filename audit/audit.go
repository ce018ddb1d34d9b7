// Package audit verifies a personnel record from the bucket it is published
// in (the C2SP tlog-tiles layout) and public keys alone: it trusts neither
// ARX nor whoever runs it. It is what `arx audit verify` runs, and what an
// auditor's own tools can import.
//
// Verify checks the checkpoint's log signature and a quorum of witness
// cosignatures, reads every entry bundle, recomputes every leaf hash and the
// Merkle tree, compares them with the published hash tiles and the signed
// root, checks each agent's prev chain, checks every passkey-signed
// approval decision against the key the log registered for that person
// before it (and names unsigned decisions where the agent's manifest
// requires a signature), and, given the state of an earlier
// run, that the log only grew since. It names what it finds: an edited,
// deleted, inserted or reordered entry, a truncated log, a replaced
// checkpoint, a fork.
package audit

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
	"golang.org/x/mod/sumdb/tlog"
)

// Source is read access to a published log: a bucket, a directory, a web
// server. A missing object is an error wrapping fs.ErrNotExist; any other
// error stops the audit (it could not be completed, which is not a
// finding).
type Source interface {
	Get(ctx context.Context, path string) ([]byte, error)
}

// Kinds of problems Verify names, beside record's (malformed, missing,
// out_of_order, chain_broken, root_mismatch).
const (
	KindEdited             = "edited"              // an entry's bytes differ from what the log committed to
	KindDeleted            = "deleted"             // an entry the log committed to is gone
	KindInserted           = "inserted"            // an entry the log never committed to is present
	KindReordered          = "reordered"           // entries the log committed to are in another order
	KindTruncated          = "truncated"           // the log ends before its checkpoint says
	KindReplacedCheckpoint = "replaced_checkpoint" // the checkpoint is not one the log signed and the witnesses cosigned, or older than one seen before
	KindFork               = "fork"                // the log is not an extension of a checkpoint seen before
	KindTileMismatch       = "tile_mismatch"       // a published hash tile disagrees with the entries, or is missing
)

// Options say which keys to trust and what was seen before.
type Options struct {
	LogKey      string   // the log's public key (note verifier key)
	WitnessKeys []string // public keys of the witnesses the auditor trusts
	Quorum      int      // cosignatures required from those witnesses
	// Previous is the state an earlier run saved (nil: first run).
	Previous *State
	// Seen are checkpoints others saw (signed by the log; for example the
	// latest a witness cosigned): the log must extend each of them.
	Seen []Seen
	// Progress, if set, is called now and then with entries verified so far.
	Progress func(done, total int64)
	// Fetchers is how many objects are fetched at once from a Source that
	// is not a BufferedSource (default 8). A BufferedSource is read one
	// batch of bundles ahead.
	Fetchers int
}

// State is what an auditor keeps between runs: the checkpoint it verified
// last. A later checkpoint must extend it.
type State struct {
	Origin     string    `json:"origin"`
	Size       int64     `json:"size"`
	Root       string    `json:"root"` // base64, as in the checkpoint
	Checkpoint string    `json:"checkpoint"`
	VerifiedAt time.Time `json:"verified_at"`
}

// Seen is what someone saw of the log: Who says who, for the report.
// Either a checkpoint signed by the log, which the log must extend; or,
// when a witness only said so (AskWitness), the size of the tree it
// cosigned (the log must not be smaller) and whether it refused the
// bucket's checkpoint as inconsistent with that tree (a fork).
type Seen struct {
	Who        string
	Checkpoint []byte
	Size       int64
	Fork       bool
	// Witness and Time: the cosignature of the witness, when the
	// checkpoint came from one.
	Witness string
	Time    time.Time
}

// SeenResult is the verdict on one Seen: "consistent", "rolled back" or
// "fork".
type SeenResult struct {
	Who     string    `json:"who"`
	Witness string    `json:"witness,omitempty"`
	Size    int64     `json:"size"`
	Time    time.Time `json:"cosigned_at,omitzero"`
	Verdict string    `json:"verdict"`
}

// Report is the outcome of Verify.
type Report struct {
	OK             bool                 `json:"ok"`
	Origin         string               `json:"origin"`
	Size           int64                `json:"checkpoint_size"`
	Root           string               `json:"checkpoint_root"`
	Cosignatures   []record.Cosignature `json:"cosignatures"`
	Quorum         int                  `json:"quorum"`
	Entries        int64                `json:"entries_verified"`
	Agents         int                  `json:"agents"`
	TilesChecked   int64                `json:"hashes_checked_against_tiles"`
	PreviousSize   int64                `json:"previous_size,omitempty"`
	ConsistentWith string               `json:"consistent_with_previous,omitempty"` // "yes", or why not
	Seen           []SeenResult         `json:"witnesses_asked,omitempty"`
	Problems       []record.Problem     `json:"problems"`
	ProblemCount   int                  `json:"problem_count"`
	// Decisions counts, per agent that was decided about or whose
	// manifest requires passkeys, the approval decisions signed with the
	// approver's passkey (each checked against the key the log registered
	// before) and those not signed.
	Decisions []passkeys.Agent `json:"approval_decisions"`
	// Receipts counts the termination receipts checked against the
	// terminations they follow.
	Receipts int64         `json:"termination_receipts"`
	Bytes    int64         `json:"entry_bytes"`
	Duration time.Duration `json:"duration_ns"`
	// State is what to save for the next run: set only when all holds.
	State *State `json:"-"`
}

// Verify audits the log published at src.
func Verify(ctx context.Context, src Source, opts Options) (*Report, error) {
	start := time.Now()
	a := &auditor{src: src, opts: opts, rep: &Report{Quorum: opts.Quorum}}
	a.sig.Report = a.chain.Report
	a.sig.Entry = func(index int64) ([]byte, error) { return a.entryAt(ctx, index) }
	if err := a.run(ctx); err != nil {
		return nil, err
	}
	a.sig.Finish()
	rep := a.rep
	for _, ag := range a.sig.Agents() {
		if ag.Signed+ag.Unsigned > 0 || ag.RequirePasskey {
			rep.Decisions = append(rep.Decisions, ag)
		}
	}
	if rep.Decisions == nil {
		rep.Decisions = []passkeys.Agent{}
	}
	rep.Receipts = a.terms.n
	rep.Problems = a.chain.Problems()
	rep.ProblemCount = a.chain.ProblemCount()
	rep.Agents = a.chain.Agents()
	rep.OK = rep.ProblemCount == 0
	if rep.Problems == nil {
		rep.Problems = []record.Problem{}
	}
	rep.Duration = time.Since(start)
	if rep.OK && a.cp != nil {
		rep.State = &State{Origin: a.cp.Origin, Size: int64(a.cp.Size), Root: rep.Root, Checkpoint: a.body, VerifiedAt: time.Now().UTC()}
	}
	return rep, nil
}

// seenCheck is a checkpoint seen before that the log must extend.
type seenCheck struct {
	who   string
	size  int64
	root  tlog.Hash
	state bool // from the auditor's state file
	seen  int  // its SeenResult in the report; -1 none
}

func (a *auditor) seenFailed(c seenCheck, why string) {
	if c.state {
		a.rep.ConsistentWith = why
	}
	if c.seen >= 0 {
		a.rep.Seen[c.seen].Verdict = strings.TrimPrefix(why, "no: ")
	}
}

type auditor struct {
	src   Source
	opts  Options
	rep   *Report
	chain record.ChainChecker
	sig   passkeys.Checker // approval decisions and the passkeys that sign them
	terms terminations     // termination receipts against their terminations
	cp    *record.Checkpoint
	body  string

	// the tree being rebuilt, for telling a changed tile from changed
	// entries (checkBundle)
	ctx         context.Context
	tree        *record.Tree
	size        int64
	root        tlog.Hash
	tileChanged bool // the last bundle checked is the log's, its tile is not

	// hash tiles of levels >= 1, the one being compared at each level
	upper  [8]upperTile
	leaf   leafHasher
	leaves [record.TileWidth]tlog.Hash // of the bundle being checked
}

// leafHasher computes RFC 6962 leaf hashes with one reused digest: the hot
// loop allocates nothing.
type leafHasher struct {
	h   hash.Hash
	sum []byte
}

var leafPrefix = []byte{0}

func (l *leafHasher) hash(entry []byte) (out tlog.Hash) {
	if l.h == nil {
		l.h = sha256.New()
	}
	l.h.Reset()
	l.h.Write(leafPrefix)
	l.h.Write(entry)
	l.sum = l.h.Sum(l.sum[:0])
	copy(out[:], l.sum)
	return out
}

type upperTile struct {
	n      int64 // tile index; -1 none
	hashes []tlog.Hash
	bad    bool // missing or malformed, reported once
}

// check checks the entry at log position pos: its chain, and, for the
// entries about approvals and passkeys, the decisions' signatures.
func (a *auditor) check(pos int64, e []byte, leaf tlog.Hash) {
	r, ok := a.chain.CheckRef(pos, e, leaf)
	if !ok {
		return
	}
	if t := string(r.Type); t == record.TypeAgentTerminated || t == record.TypeTerminationReceipt {
		if parsed, err := record.Parse(e); err == nil {
			a.terms.add(pos, parsed, a.problem)
		}
	}
	switch string(r.Type) {
	case record.TypeCallRequested: // what it showed matters only to a signed decision: kept, parsed if one comes
		if call := plainCall(r.Call); call != nil {
			a.sig.AddRequested(pos, leaf, call)
		}
		return
	case record.TypeCredentialIssued, record.TypeCallCompleted, record.TypeCallExpired, record.TypeCredentialRefused:
		a.sig.Closed(plainCall(r.Call))
		return
	}
	if !passkeys.Wants(r.Type) {
		return
	}
	if parsed, err := record.Parse(e); err == nil {
		a.sig.Add(pos, parsed)
	}
}

// plainCall is a call id as ScanEntry read it, or nil when it holds an
// escape: ARX's call ids are plain, so one with an escape is none of them.
func plainCall(call []byte) []byte {
	if bytes.IndexByte(call, '\\') >= 0 {
		return nil
	}
	return call
}

func (a *auditor) problem(kind string, index int64, format string, args ...any) {
	a.chain.Report(record.Problem{Kind: kind, Index: index, Message: fmt.Sprintf(format, args...)})
}

func (a *auditor) run(ctx context.Context) error {
	signed, err := a.src.Get(ctx, record.CheckpointPath)
	if errors.Is(err, fs.ErrNotExist) {
		a.problem(KindReplacedCheckpoint, -1, "the bucket has no checkpoint")
		return nil
	}
	if err != nil {
		return err
	}
	cs, err := record.OpenCosigned(signed, a.opts.LogKey, a.opts.WitnessKeys)
	if err != nil {
		a.problem(KindReplacedCheckpoint, -1, "the checkpoint is not signed by the log key: %v", err)
		return nil
	}
	a.cp, a.body = cs.Checkpoint, cs.Body
	rep := a.rep
	rep.Origin, rep.Size, rep.Root = cs.Checkpoint.Origin, int64(cs.Checkpoint.Size), base64.StdEncoding.EncodeToString(cs.Checkpoint.Hash)
	rep.Cosignatures = cs.Cosigs
	if rep.Cosignatures == nil {
		rep.Cosignatures = []record.Cosignature{}
	}
	for _, name := range cs.Invalid {
		a.problem(KindReplacedCheckpoint, -1, "the cosignature of witness %s does not verify: it was forged, or the checkpoint altered", name)
	}
	if len(cs.Cosigs) < a.opts.Quorum {
		a.problem(KindReplacedCheckpoint, -1, "%d of the %d required witnesses cosigned the checkpoint: it is not one the witnesses saw", len(cs.Cosigs), a.opts.Quorum)
	}
	size := int64(cs.Checkpoint.Size)
	root := tlog.Hash(cs.Checkpoint.Hash)

	// Checkpoints seen before, by this auditor or a witness: the log must
	// extend each of them.
	var checks []seenCheck
	if p := a.opts.Previous; p != nil {
		rep.PreviousSize = p.Size
		pr, err := base64.StdEncoding.DecodeString(p.Root)
		if p.Origin != cs.Checkpoint.Origin || err != nil || len(pr) != tlog.HashSize {
			return fmt.Errorf("audit: the state file is about log %q, this checkpoint about %q", p.Origin, cs.Checkpoint.Origin)
		}
		checks = append(checks, seenCheck{who: "this auditor verified on " + p.VerifiedAt.Format(time.RFC3339), size: p.Size, root: tlog.Hash(pr), state: true, seen: -1})
		rep.ConsistentWith = "yes"
	}
	for _, sc := range a.opts.Seen {
		i := len(rep.Seen)
		rep.Seen = append(rep.Seen, SeenResult{Who: sc.Who, Witness: sc.Witness, Size: sc.Size, Time: sc.Time, Verdict: "consistent"})
		switch {
		case sc.Checkpoint != nil:
			c, _, err := record.OpenCheckpoint(sc.Checkpoint, a.opts.LogKey)
			if err != nil {
				return fmt.Errorf("audit: the checkpoint %s saw: %w", sc.Who, err)
			}
			rep.Seen[i].Size = int64(c.Size)
			checks = append(checks, seenCheck{who: sc.Who, size: int64(c.Size), root: tlog.Hash(c.Hash), seen: i})
		case sc.Fork:
			rep.Seen[i].Verdict = "fork"
			a.problem(KindFork, -1, "%s: two different logs were shown (a fork)", sc.Who)
		case sc.Size > size:
			rep.Seen[i].Verdict = "rolled back"
			a.problem(KindReplacedCheckpoint, -1, "the checkpoint commits to %d entries, but %s: the log was rolled back, or its checkpoint replaced by an older one",
				size, sc.Who)
		}
	}
	pending := checks[:0:0] // checks to make while the tree is rebuilt, by size
	for _, c := range checks {
		switch {
		case size < c.size:
			a.seenFailed(c, "no: rolled back")
			a.problem(KindReplacedCheckpoint, -1, "the checkpoint commits to %d entries, but %s one of %d: the log was rolled back, or its checkpoint replaced by an older one (or the newer one not yet published)",
				size, c.who, c.size)
		case size == c.size && root != c.root:
			a.seenFailed(c, "no: fork")
			a.problem(KindFork, -1, "the checkpoint of size %d has another root than the one %s: two different logs were shown (a fork)", size, c.who)
		case c.size > 0 && c.size < size:
			pending = append(pending, c)
		}
	}
	slices.SortFunc(pending, func(x, y seenCheck) int { return cmp.Compare(x.size, y.size) })
	nextCheck := int64(-1)
	if len(pending) > 0 {
		nextCheck = pending[0].size
	}

	var tree record.Tree
	var done [8]tlog.Hash
	for i := range a.upper {
		a.upper[i].n = -1
	}
	bundles := (size + record.TileWidth - 1) / record.TileWidth
	f := newFetcher(ctx, a.src, size, a.opts.Fetchers)
	defer f.stop()
	var missing []int64 // bundles that are not in the bucket
	progressEvery := int64(64)
	for n := int64(0); n < bundles; n++ {
		fr, err := f.next()
		if err != nil {
			return err
		}
		base := n * record.TileWidth
		w := int(min(size-base, record.TileWidth))
		if fr.bundle == nil {
			missing = append(missing, n)
		}
		tile := fr.tile
		if tile != nil && len(tile) != w*tlog.HashSize {
			a.problem(KindTileMismatch, base, "%s holds %d bytes, not %d hashes", record.TilePath(0, n, w), len(tile), w)
			tile = nil
		} else if tile == nil && fr.bundle != nil {
			a.problem(KindTileMismatch, base, "%s is missing from the bucket", record.TilePath(0, n, w))
		}
		rep.Bytes += int64(len(fr.bundle))
		a.ctx, a.tree, a.size, a.root = ctx, &tree, size, root
		leaves := a.checkBundle(n, w, fr.bundle, tile)
		if a.tileChanged {
			tile, a.tileChanged = nil, false // the entries are the log's: hash them
		}
		for j := 0; j < w; j++ {
			var leaf tlog.Hash
			switch {
			case tile != nil:
				leaf = tileHash(tile, j)
			case leaves != nil:
				leaf = leaves[j]
			default:
				continue // neither entries nor tile: nothing to hash (reported)
			}
			k := tree.AppendLeafTiles(leaf, &done)
			pos := base + int64(j)
			for l := 0; l < k; l++ {
				a.checkUpper(ctx, l+1, (pos+1)>>(record.TileHeight*(l+1))-1, done[l], size)
			}
			for pos+1 == nextCheck {
				if tree.Root() != pending[0].root {
					a.seenFailed(pending[0], "no: fork")
					a.problem(KindFork, -1, "the log's first %d entries do not hash to the root %s: the log was rewritten, or two different logs were shown (a fork)",
						nextCheck, pending[0].who)
				}
				pending = pending[1:]
				nextCheck = -1
				if len(pending) > 0 {
					nextCheck = pending[0].size
				}
			}
		}
		if a.opts.Progress != nil && (n%progressEvery == 0 || n == bundles-1) {
			a.opts.Progress(min(base+int64(w), size), size)
		}
	}
	a.reportMissing(missing, bundles, size)
	if tree.Size() == size && tree.Root() != root {
		a.problem(record.ProblemRootMismatch, -1, "the published tiles do not hash to the checkpoint's root: entries and tiles were changed together")
	}
	return nil
}

// reportMissing names bundles absent from the bucket: at the end of the log
// that is a truncation, elsewhere deleted entries.
func (a *auditor) reportMissing(missing []int64, bundles, size int64) {
	tail := len(missing)
	for tail > 0 && missing[tail-1] == bundles-int64(len(missing)-tail)-1 {
		tail--
	}
	for _, n := range missing[:tail] {
		base := n * record.TileWidth
		a.problem(KindDeleted, base, "entries %d..%d are gone: %s is missing from the bucket", base, min(base+record.TileWidth, size)-1,
			record.BundlePath(n, int(min(size-base, record.TileWidth))))
	}
	if tail < len(missing) {
		first := missing[tail] * record.TileWidth
		a.problem(KindTruncated, first, "the log is truncated: the checkpoint commits to %d entries, the bucket ends after %d (entries %d..%d are missing)",
			size, first, first, size-1)
	}
}

// checkBundle checks bundle n of width w against its level-0 tile (nil
// when missing or malformed) and returns the entries' leaf hashes (nil when
// the bundle is missing). The fast path allocates nothing: it compares each
// leaf hash with the tile's bytes as it computes it. A bundle that does not
// match its tile is diagnosed entry by entry.
func (a *auditor) checkBundle(n int64, w int, bundle, tile []byte) []tlog.Hash {
	if bundle == nil {
		return nil
	}
	base := n * record.TileWidth
	a.rep.Entries += int64(w)
	if tile != nil {
		rest := bundle
		j := 0
		for ; j < w; j++ {
			e, r, err := record.NextBundleEntry(rest)
			if err != nil {
				break
			}
			h := a.leaf.hash(e)
			if h != tileHash(tile, j) {
				break
			}
			a.leaves[j] = h
			rest = r
		}
		if j == w && len(rest) == 0 {
			rest = bundle
			for j := 0; j < w; j++ {
				e, r, _ := record.NextBundleEntry(rest)
				a.check(base+int64(j), e, a.leaves[j])
				rest = r
			}
			a.rep.TilesChecked += int64(w)
			return a.leaves[:w]
		}
		if leaves := a.entriesOverTile(n, w, bundle, parseTile(tile)); leaves != nil {
			return leaves
		}
	}
	return a.diagnose(n, w, bundle, parseTile(tile))
}

// entriesOverTile decides, for a bundle that disagrees with its hash tile,
// whether the tile is what was changed: the bundle holds w well-formed
// entries, each at its own index, and their leaf hashes agree with the
// rest of the tree (the hash one level up for a full tile, the
// checkpoint's root for the last, partial one) while the tile's do not.
// Then it names the tile (tile_mismatch, with its path and the hashes that
// differ), checks the entries' chains and returns their leaf hashes, for
// the caller to hash instead of the tile's; otherwise nil, and nothing is
// reported.
func (a *auditor) entriesOverTile(n int64, w int, bundle []byte, tile []tlog.Hash) []tlog.Hash {
	if len(tile) != w || a.tree == nil {
		return nil
	}
	base := n * record.TileWidth
	entries, err := record.ParseEntryBundle(bundle)
	if err != nil || len(entries) != w {
		return nil
	}
	leaves := make([]tlog.Hash, w)
	for i, e := range entries {
		if r, err := record.ScanEntry(e); err != nil || r.Index != base+int64(i) {
			return nil
		}
		leaves[i] = record.LeafHash(e)
	}
	agrees := func(hs []tlog.Hash) bool {
		if w == record.TileWidth {
			parent, ok := a.peekUpper(1, n)
			return ok && record.TileHash(hs, nil) == parent
		}
		if base+int64(w) != a.size {
			return false
		}
		t := a.tree.Clone()
		for _, h := range hs {
			t.AppendLeaf(h)
		}
		return t.Root() == a.root
	}
	if !agrees(leaves) || agrees(tile) {
		return nil
	}
	var differ []int64
	for j := range w {
		if leaves[j] != tile[j] {
			differ = append(differ, base+int64(j))
		}
	}
	a.problem(KindTileMismatch, differ[0], "%s was changed: its hashes for entries %v do not match the entries, which are those the log committed to (they hash to the tree one level up and to the signed root)",
		record.TilePath(0, n, w), differ)
	for i, e := range entries {
		a.check(base+int64(i), e, leaves[i])
	}
	a.tileChanged = true
	return leaves
}

// peekUpper reads hash idx of tree level 8*level from its published tile,
// without reporting anything (checkUpper does, when it compares).
func (a *auditor) peekUpper(level int, idx int64) (tlog.Hash, bool) {
	n := idx / record.TileWidth
	full, partial := record.TileWidthAt(a.size, level)
	w := record.TileWidth
	if n == full {
		w = partial
	}
	if n > full || w == 0 {
		return tlog.Hash{}, false
	}
	data, err := getTile(a.ctx, a.src, level, n, w)
	if err != nil {
		return tlog.Hash{}, false
	}
	hs, err := record.ParseHashTile(data)
	if err != nil || len(hs) != w {
		return tlog.Hash{}, false
	}
	return hs[idx%record.TileWidth], true
}

// tileHash is hash j of a hash tile.
func tileHash(tile []byte, j int) tlog.Hash {
	return tlog.Hash(tile[j*tlog.HashSize : (j+1)*tlog.HashSize])
}

// parseTile splits a well-formed tile into its hashes (nil for nil).
func parseTile(tile []byte) []tlog.Hash {
	if tile == nil {
		return nil
	}
	hashes, _ := record.ParseHashTile(tile)
	return hashes
}

// diagnose explains a bundle whose entries do not match its tile: which
// entries were edited, deleted, inserted or moved.
func (a *auditor) diagnose(n int64, w int, bundle []byte, tile []tlog.Hash) []tlog.Hash {
	base := n * record.TileWidth
	path := record.BundlePath(n, w)
	entries, err := record.ParseEntryBundle(bundle)
	if err != nil {
		a.problem(record.ProblemMalformed, base, "%s is not an entry bundle: %v", path, err)
		return nil
	}
	leaves := make([]tlog.Hash, len(entries))
	for i, e := range entries {
		leaves[i] = record.LeafHash(e)
	}
	if tile == nil {
		// Without the tile, only the entries themselves can speak.
		if len(entries) != w {
			kind := KindDeleted
			if len(entries) > w {
				kind = KindInserted
			}
			a.problem(kind, base, "%s holds %d entries, the checkpoint commits to %d", path, len(entries), w)
		}
		for i, e := range entries {
			a.check(base+int64(i), e, leaves[i])
		}
		if len(leaves) != w {
			return nil
		}
		return leaves
	}
	at := make(map[tlog.Hash]int, w) // committed leaf hash -> its position in the bundle
	for j, h := range tile {
		at[h] = j
	}
	pos := make([]int, len(entries)) // each entry's committed position, -1 if none
	seen := make([]bool, w)
	var unmatched []int
	for i, h := range leaves {
		j, ok := at[h]
		if !ok || seen[j] {
			pos[i] = -1
			unmatched = append(unmatched, i)
			continue
		}
		pos[i], seen[j] = j, true
	}
	var gone []int
	for j := range w {
		if !seen[j] {
			gone = append(gone, j)
		}
	}
	// An unmatched entry that claims the index of a gone one was edited.
	claimed := map[int]int{} // gone position -> entry
	for _, i := range unmatched {
		if r, err := record.ScanEntry(entries[i]); err == nil {
			if j := int(r.Index - base); j >= 0 && j < w && !seen[j] {
				if _, dup := claimed[j]; !dup {
					claimed[j] = i
				}
			}
		}
	}
	if len(claimed) == 0 && len(unmatched) == len(gone) {
		for k, i := range unmatched { // same count: edits that also changed the index
			claimed[gone[k]] = i
		}
	}
	isEdit := map[int]bool{}
	for _, j := range gone {
		if i, ok := claimed[j]; ok {
			isEdit[i] = true
			pos[i] = j
			a.problem(KindEdited, base+int64(j), "entry %d was edited: its bytes in %s no longer hash to the leaf hash the log committed to", base+int64(j), path)
		} else {
			a.problem(KindDeleted, base+int64(j), "entry %d was deleted from %s", base+int64(j), path)
		}
	}
	for _, i := range unmatched {
		if !isEdit[i] {
			a.problem(KindInserted, -1, "%s holds an entry the log never committed to (entry %d of the bundle%s)", path, i, claimedIndex(entries[i]))
		}
	}
	// Committed entries in the wrong order.
	var order []int
	for _, j := range pos {
		if j >= 0 {
			order = append(order, j)
		}
	}
	sorted := true
	for k := 1; k < len(order); k++ {
		if order[k] < order[k-1] {
			sorted = false
		}
	}
	if !sorted {
		var moved []int64
		want := append([]int(nil), order...)
		slices.Sort(want)
		for k := range order {
			if order[k] != want[k] {
				moved = append(moved, base+int64(order[k]))
			}
		}
		slices.Sort(moved)
		a.problem(KindReordered, moved[0], "entries %v sit out of order in %s", moved, path)
	}
	// Chains, in the order found, each entry at its committed position.
	for i, e := range entries {
		p := base + int64(i)
		if pos[i] >= 0 {
			p = base + int64(pos[i])
		} else if r, err := record.ScanEntry(e); err == nil {
			p = r.Index
		}
		a.check(p, e, leaves[i])
	}
	return nil
}

func claimedIndex(e []byte) string {
	if r, err := record.ScanEntry(e); err == nil {
		return fmt.Sprintf(", claiming index %d", r.Index)
	}
	return ""
}

// checkUpper compares a recomputed hash of tree level 8*level with the
// published tile that holds it.
func (a *auditor) checkUpper(ctx context.Context, level int, idx int64, h tlog.Hash, size int64) {
	if level >= len(a.upper) {
		return
	}
	u := &a.upper[level]
	n := idx / record.TileWidth
	if u.n != n {
		u.n, u.hashes, u.bad = n, nil, false
		full, partial := record.TileWidthAt(size, level)
		w := record.TileWidth
		if n == full {
			w = partial
		}
		data, err := getTile(ctx, a.src, level, n, w)
		if err == nil {
			u.hashes, err = record.ParseHashTile(data)
			if err == nil && len(u.hashes) != w {
				err = fmt.Errorf("holds %d hashes, not %d", len(u.hashes), w)
			}
		}
		if err != nil {
			u.bad, u.hashes = true, nil
			a.problem(KindTileMismatch, -1, "%s: %v", record.TilePath(level, n, w), err)
			return
		}
	}
	if u.bad {
		return
	}
	if got := u.hashes[idx%record.TileWidth]; got != h {
		span := int64(1) << (record.TileHeight * level)
		a.problem(KindTileMismatch, idx*span, "hash %d of %s does not match entries %d..%d: the tile, or those entries and their lower tiles, were changed",
			idx%record.TileWidth, record.TilePath(level, n, len(u.hashes)), idx*span, (idx+1)*span-1)
		return
	}
	a.rep.TilesChecked++
}

// entryAt reads the entry at index from its bundle again (the passkey
// checker, for what a call showed: the caller checks its leaf hash).
func (a *auditor) entryAt(ctx context.Context, index int64) ([]byte, error) {
	n := index / record.TileWidth
	w := int(min(record.TileWidth, a.size-n*record.TileWidth))
	if index < 0 || w <= 0 {
		return nil, fmt.Errorf("entry %d is not in the log", index)
	}
	bundle, err := getBundle(ctx, a.src, n, w)
	if err != nil {
		return nil, err
	}
	for i := int64(0); ; i++ {
		e, rest, err := record.NextBundleEntry(bundle)
		if err != nil {
			return nil, err
		}
		if n*record.TileWidth+i == index {
			return e, nil
		}
		bundle = rest
	}
}
