package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// Importing local records.
//
// An SDK keeps a local record (hash-chained JSONL, one canonical entry per
// line, numbered by line) in local-only mode and when the server was
// unreachable. ImportRecord attaches such a record to a hired agent's
// record: one record.imported entry per local entry, with the local entry
// inside its data. The server's own entry says only that an operator
// imported this text, at this time: what the local entry claims is the
// SDK's word, never a fact the server recorded.
//
// A local record is identified by the leaf hash of its first entry (its
// chain). Imports may come in several requests (each is one transaction),
// resume after a failure, and be repeated: entries already imported are
// skipped when they are byte for byte the same, and refused as a conflict
// when they are not (the local file was changed after its import).

// TypeRecordImported is the entry of one imported local entry.
const TypeRecordImported = "record.imported"

// MaxImportEntries bounds the entries of one import request.
const MaxImportEntries = 10000

// ImportRequest is one part of a local record.
type ImportRequest struct {
	Source  string   // the file's name, for people
	Chain   string   // hex leaf hash of the local record's first entry
	Entries [][]byte // canonical entries, consecutive by local index
}

// ImportResult says what an import did.
type ImportResult struct {
	Imported   int   `json:"imported"`
	Skipped    int   `json:"skipped"`     // imported before
	LocalNext  int64 `json:"local_next"`  // the next local index to send
	FirstIndex int64 `json:"first_index"` // log index of the first new entry; -1 when none
	LastIndex  int64 `json:"last_index"`  // log index of the last new entry; -1 when none
}

// importMu serialises imports, so that two imports of one chain cannot both
// append the same entries. Imports are rare operator actions.
var importMu sync.Mutex

// ImportRecord appends the entries of a local record to an agent's record.
func (r *Runtime) ImportRecord(ctx context.Context, p *Principal, agentID string, req ImportRequest) (*ImportResult, error) {
	if !p.IsAdmin() {
		return nil, arxerr.New(arxerr.Forbidden, "only an operator can import records")
	}
	switch {
	case req.Source == "" || len(req.Source) > 255 || !utf8.ValidString(req.Source) || strings.ContainsAny(req.Source, "\x00\n\r"):
		return nil, arxerr.New(arxerr.BadRequest, "source must be a file name of 1 to 255 bytes")
	case len(req.Chain) != 64 || strings.Trim(req.Chain, "0123456789abcdef") != "":
		return nil, arxerr.New(arxerr.BadRequest, "chain must be the hex leaf hash of the local record's first entry")
	case len(req.Entries) == 0 || len(req.Entries) > MaxImportEntries:
		return nil, arxerr.New(arxerr.BadRequest, "send 1 to %d entries per request", MaxImportEntries)
	}
	a, err := r.store.Agent(ctx, agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(agentID, 64))
	}
	if err != nil {
		return nil, r.internal("import", err)
	}
	entries := make([]*record.Entry, len(req.Entries))
	for i, b := range req.Entries {
		e, err := record.Parse(b)
		if err != nil {
			return nil, arxerr.New(arxerr.BadRequest, "entry %d of the request: %v", i, err)
		}
		if e.Agent != "" && e.Agent != a.ID && e.Agent != "local:"+a.Name {
			ae := arxerr.New(arxerr.BadRequest, "local entry %d belongs to agent %q, not to %s (%s)", e.Index, truncate(e.Agent, 80), a.Name, a.ID)
			ae.Hint = "import a local record into the agent that wrote it"
			return nil, ae
		}
		entries[i] = e
	}
	if entries[0].Index == 0 && record.HashString(record.LeafHash(req.Entries[0])) != req.Chain {
		return nil, arxerr.New(arxerr.BadRequest, "chain is not the leaf hash of local entry 0")
	}

	importMu.Lock()
	defer importMu.Unlock()
	prior, err := r.importedChain(ctx, a.ID, req.Chain)
	if err != nil {
		return nil, r.internal("import", err)
	}
	res := &ImportResult{FirstIndex: -1, LastIndex: -1}
	next := int64(len(prior.leaves))
	var fresh []*record.Entry
	for i, e := range entries {
		leaf := record.HashString(record.LeafHash(req.Entries[i]))
		switch {
		case e.Index < next:
			if prior.leaves[e.Index] != leaf {
				ce := arxerr.New(arxerr.Conflict, "local entry %d of %s differs from the one imported before: the local record was changed after its import", e.Index, truncate(req.Source, 80))
				ce.Hint = "check it with `arx record verify`; a changed local record cannot be imported again"
				return nil, ce
			}
			res.Skipped++
			continue
		case e.Index > next:
			return nil, arxerr.New(arxerr.BadRequest, "local entries %d..%d of %s were not imported yet: send the record from its start", next, e.Index-1, truncate(req.Source, 80))
		}
		if want := prior.heads[e.Agent]; e.Prev != want {
			return nil, arxerr.New(arxerr.BadRequest, "local entry %d of %s does not chain to the agent's previous local entry: the local record is broken (run `arx record verify`)", e.Index, truncate(req.Source, 80))
		}
		prior.heads[e.Agent] = leaf
		next++
		fresh = append(fresh, &record.Entry{Agent: a.ID, Type: TypeRecordImported, Actor: p.Actor(),
			Data: map[string]any{"source": req.Source, "chain": req.Chain, "local_leaf_hash": leaf, "entry": localEntryData(e)}})
	}
	res.LocalNext = next
	if len(fresh) == 0 {
		return res, nil
	}
	now := r.now()
	for _, e := range fresh {
		e.Time = now
		if _, err := e.Marshal(); err != nil {
			return nil, arxerr.New(arxerr.BadRequest, "local entry %v cannot be imported: %v", e.Data["entry"].(map[string]any)["index"], err)
		}
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Agent(a.ID); err != nil {
			return err
		}
		for _, e := range fresh {
			if err := tx.Append(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("import record", err)
	}
	res.Imported = len(fresh)
	res.FirstIndex, res.LastIndex = fresh[0].Index, fresh[len(fresh)-1].Index
	r.log.Info("local record imported", "agent", a.ID, "source", req.Source, "entries", res.Imported, "skipped", res.Skipped, "actor", p.Actor())
	return res, nil
}

// localEntryData is a local entry as the data of its record.imported entry.
func localEntryData(e *record.Entry) map[string]any {
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	return map[string]any{"index": e.Index, "time": e.Time.UTC().Format(record.TimeFormat), "agent": e.Agent, "prev": e.Prev,
		"type": e.Type, "call": e.Call, "connector": e.Connector, "action": e.Action, "risk": e.Risk, "actor": e.Actor, "data": data}
}

// importedChain is what was imported of one local record before: the leaf
// hash of each local entry by local index, and each local agent's head.
type importedChain struct {
	leaves []string
	heads  map[string]string
}

func (r *Runtime) importedChain(ctx context.Context, agentID, chain string) (*importedChain, error) {
	out := &importedChain{heads: map[string]string{}}
	after := int64(-1)
	for {
		page, err := r.store.AgentEntries(ctx, agentID, after, 1000)
		if err != nil {
			return nil, err
		}
		for _, se := range page {
			after = se.Index
			if se.Type != TypeRecordImported {
				continue
			}
			var w struct {
				Data struct {
					Chain string `json:"chain"`
					Leaf  string `json:"local_leaf_hash"`
					Entry struct {
						Index int64  `json:"index"`
						Agent string `json:"agent"`
					} `json:"entry"`
				} `json:"data"`
			}
			if err := json.Unmarshal(se.Data, &w); err != nil {
				return nil, fmt.Errorf("entry %d: %w", se.Index, err)
			}
			if w.Data.Chain != chain {
				continue
			}
			if w.Data.Entry.Index != int64(len(out.leaves)) {
				return nil, fmt.Errorf("entry %d: imported local entry %d out of order", se.Index, w.Data.Entry.Index)
			}
			out.leaves = append(out.leaves, w.Data.Leaf)
			out.heads[w.Data.Entry.Agent] = w.Data.Leaf
		}
		if len(page) < 1000 {
			return out, nil
		}
	}
}
