// Package record is the personnel record: the entries ARX appends for every
// fact about an agent, their canonical encoding, the RFC 6962 Merkle log they
// form, signed checkpoints of that log, and the verification an auditor runs.
//
// It promises that the same entry always has the same bytes (canonical JSON,
// see canonical.go), that each entry names the hash of the same agent's
// previous entry (so one agent's record is a hash chain on its own), and that
// Verify detects any edited, deleted, inserted or reordered entry and any
// truncation relative to a signed checkpoint. It does no I/O; auditors import
// it.
package record

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Entry types. The list grows with the product; verifiers accept any type.
const (
	TypeAgentHired        = "agent.hired"
	TypeAgentTerminated   = "agent.terminated"
	TypeTokenIssued       = "token.issued"
	TypeTokenRevoked      = "token.revoked"
	TypeCallRequested     = "call.requested"
	TypeCredentialRefused = "credential.refused"
	TypeCredentialIssued  = "credential.issued"
	TypeCallCompleted     = "call.completed"
	TypeCallExpired       = "call.expired"
	TypeApprovalRequested = "approval.requested"
	TypeApprovalGranted   = "approval.granted"
	TypeApprovalDenied    = "approval.denied"
	TypeApprovalExpired   = "approval.expired"
	TypeApprovalWithdrawn = "approval.withdrawn"
	TypeDriftDetected     = "drift.detected"
	TypeGatewayRequest    = "gateway.request"
)

// TimeFormat is the canonical time of an entry: UTC, microseconds, always six
// digits, so every implementation writes the same string for the same instant.
const TimeFormat = "2006-01-02T15:04:05.000000Z"

// MaxEntrySize bounds one encoded entry.
const MaxEntrySize = 64<<10 - 1 // one entry fits a C2SP tlog-tiles entry bundle (2-byte length)

// Entry is one fact of the record. All fields are always present in the
// encoding; empty strings stand for "not applicable".
type Entry struct {
	Index     int64          `json:"index"`
	Time      time.Time      `json:"-"`
	Agent     string         `json:"agent"`
	Prev      string         `json:"prev"` // hex leaf hash of the same agent's previous entry, "" for its first
	Type      string         `json:"type"`
	Call      string         `json:"call"`
	Connector string         `json:"connector"`
	Action    string         `json:"action"`
	Risk      string         `json:"risk"`
	Actor     string         `json:"actor"` // who caused it: "agent:<id>", "user:<email>", "admin", "system"
	Data      map[string]any `json:"data"`
}

// Marshal returns the canonical encoding of e.
func (e *Entry) Marshal() ([]byte, error) {
	// A governed call's entries are 400-500 bytes: one allocation for
	// most (384 made most grow once, to twice the size).
	return e.AppendMarshal(make([]byte, 0, 640))
}

// AppendMarshal appends the canonical encoding of e to b. The keys are
// written in their sorted order by hand; data goes through the canonical
// encoder.
func (e *Entry) AppendMarshal(b []byte) ([]byte, error) {
	if e.Type == "" {
		return nil, errors.New("record: entry has no type")
	}
	if e.Index < 0 || e.Index > maxSafeInt {
		return nil, fmt.Errorf("record: index %d out of range", e.Index)
	}
	var err error
	str := func(key, val string) {
		if err != nil {
			return
		}
		b = append(b, key...)
		b, err = appendString(b, val)
	}
	str(`{"action":`, e.Action)
	str(`,"actor":`, e.Actor)
	str(`,"agent":`, e.Agent)
	str(`,"call":`, e.Call)
	str(`,"connector":`, e.Connector)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	b = append(b, `,"data":`...)
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	if b, err = appendObject(b, data, 1); err != nil {
		return nil, fmt.Errorf("record: data: %w", err)
	}
	b = append(b, `,"index":`...)
	b = append(b, fmt.Sprint(e.Index)...)
	str(`,"prev":`, e.Prev)
	str(`,"risk":`, e.Risk)
	str(`,"time":`, e.Time.UTC().Format(TimeFormat))
	str(`,"type":`, e.Type)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	b = append(b, '}')
	if len(b) > MaxEntrySize {
		return nil, fmt.Errorf("record: entry of %d bytes exceeds %d", len(b), MaxEntrySize)
	}
	return b, nil
}

// wireEntry is the JSON shape used to parse an entry strictly.
type wireEntry struct {
	Index     *int64         `json:"index"`
	Time      *string        `json:"time"`
	Agent     *string        `json:"agent"`
	Prev      *string        `json:"prev"`
	Type      *string        `json:"type"`
	Call      *string        `json:"call"`
	Connector *string        `json:"connector"`
	Action    *string        `json:"action"`
	Risk      *string        `json:"risk"`
	Actor     *string        `json:"actor"`
	Data      map[string]any `json:"data"`
}

// Parse decodes an entry and checks that data is exactly its canonical
// encoding: the same fact must always have the same bytes, or the hashes that
// commit to it would mean nothing.
func Parse(data []byte) (*Entry, error) {
	if len(data) > MaxEntrySize {
		return nil, fmt.Errorf("record: entry of %d bytes exceeds %d", len(data), MaxEntrySize)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	d.DisallowUnknownFields()
	var w wireEntry
	if err := d.Decode(&w); err != nil {
		return nil, fmt.Errorf("record: malformed entry: %w", err)
	}
	if d.More() {
		return nil, errors.New("record: malformed entry: trailing data")
	}
	for name, p := range map[string]*string{"time": w.Time, "agent": w.Agent, "prev": w.Prev, "type": w.Type,
		"call": w.Call, "connector": w.Connector, "action": w.Action, "risk": w.Risk, "actor": w.Actor} {
		if p == nil {
			return nil, fmt.Errorf("record: malformed entry: missing field %q", name)
		}
	}
	if w.Index == nil || w.Data == nil {
		return nil, errors.New("record: malformed entry: missing index or data")
	}
	t, err := time.Parse(TimeFormat, *w.Time)
	if err != nil {
		return nil, fmt.Errorf("record: malformed entry: time %q is not in the canonical format", *w.Time)
	}
	if *w.Prev != "" {
		if _, err := parseHash(*w.Prev); err != nil {
			return nil, fmt.Errorf("record: malformed entry: prev: %w", err)
		}
	}
	e := &Entry{Index: *w.Index, Time: t, Agent: *w.Agent, Prev: *w.Prev, Type: *w.Type, Call: *w.Call,
		Connector: *w.Connector, Action: *w.Action, Risk: *w.Risk, Actor: *w.Actor, Data: w.Data}
	canon, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, data) {
		return nil, errors.New("record: entry is not in canonical form")
	}
	return e, nil
}

// LeafHash is the RFC 6962 leaf hash of an encoded entry: SHA-256(0x00 || data).
func LeafHash(data []byte) tlog.Hash { return tlog.RecordHash(data) }

// HashString renders a hash as a prev value: lowercase hex.
func HashString(h tlog.Hash) string { return hex.EncodeToString(h[:]) }

func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("hash %q is not 64 hex digits", s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("hash %q is not hex", s)
	}
	return h, nil
}
