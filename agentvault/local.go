package agentvault

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// Local-only mode (Config.LocalMode, ARX_LOCAL_MODE=1) runs without a
// server. The SDK reads the manifest itself, decides each call by the rules
// the runtime applies (manifest.Decide), and appends the entries the runtime
// would append to a hash-chained JSONL file in Config.LocalRecordDir, one
// file per agent: <agent name>.jsonl. Each line is a canonical record.Entry;
// index counts the lines of the file from 0 and prev is the leaf hash of the
// same agent's previous line, so `arx record verify DIR` checks the file
// with the same verifier as the server's log, and `arx manifest check`
// compares it with the manifest.
//
// The same files keep the attempts made while the server was unreachable
// (outside local-only mode), one file per agent id, so that nothing is lost:
// `arx record import` attaches them to the agent's record later.
//
// Several processes may append to one file: each append holds an exclusive
// lock on the file (flock) across reading the last entry, writing and fsync.

// DefaultManifest is where local-only mode looks for the manifest.
const DefaultManifest = "manifests/job_description.yaml"

// The values of Config.LocalApprove (ARX_LOCAL_APPROVE): what local-only
// mode does with a call that needs an approver.
const (
	LocalApprovePrompt = "prompt" // ask on the terminal; deny when there is none (the default)
	LocalApproveAllow  = "allow"
	LocalApproveDeny   = "deny"
)

// LocalCredentialPrefix starts every local-only mode credential. It is not
// a JWT and no system of record accepts it.
const LocalCredentialPrefix = "local."

// TypeCallUnreachable is the entry recorded locally when a call could not
// reach the ARX server, so the call was not made.
const TypeCallUnreachable = "call.unreachable"

// ErrUnreachable is wrapped by the error of a call that was not made because
// the ARX server could not be reached (network errors, or 5xx answers after
// the retries). The call failed closed; the attempt is recorded under
// Config.LocalRecordDir.
var ErrUnreachable = errors.New("agentvault: the ARX server is unreachable")

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// localMode is local-only mode's state, made on the first call.
type localMode struct {
	manifestPath string
	approve      string
	dir          string
	// ask asks a person on the terminal; tests replace it.
	ask func(ctx context.Context, question string) (bool, error)

	loadMu   sync.Mutex // guards loading
	loaded   bool
	manifest *manifest.Manifest
	agent    string // entries' agent: "local:<name>"
	file     string

	mu    sync.Mutex
	calls map[string]*localCall // open calls by id
	keys  map[string]string     // idempotency key -> call id
}

type localCall struct {
	call     Call
	declared manifest.Risk
}

// refOf names a call in its entries, as the runtime does.
func refOf(c *Call) record.CallRef {
	return record.CallRef{Agent: c.AgentID, Call: c.ID, Connector: c.Connector, Action: c.Action, Risk: string(c.Risk)}
}

func newLocalMode(manifestPath, approve, dir string) (*localMode, error) {
	if manifestPath == "" {
		manifestPath = DefaultManifest
	}
	switch approve {
	case "":
		approve = LocalApprovePrompt
	case LocalApprovePrompt, LocalApproveAllow, LocalApproveDeny:
	default:
		return nil, fmt.Errorf("agentvault: %s=%q is not allow, deny or prompt", envLocalApprove, approve)
	}
	return &localMode{manifestPath: manifestPath, approve: approve, dir: dir, ask: askTerminal,
		calls: map[string]*localCall{}, keys: map[string]string{}}, nil
}

// load reads the manifest on first use, so that a Client made at process
// start does not need it until the first governed call.
func (l *localMode) load() error {
	l.loadMu.Lock()
	defer l.loadMu.Unlock()
	if l.loaded {
		return nil
	}
	m, err := manifest.ParseFile(l.manifestPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("agentvault: local-only mode needs the agent's manifest, and %s does not exist (hint: run from the agent's directory, or set %s to its job_description.yaml)", l.manifestPath, envManifest)
		}
		return fmt.Errorf("agentvault: local-only mode: %w (hint: run `arx manifest lint %s`)", err, l.manifestPath)
	}
	l.manifest = m
	l.agent = "local:" + m.Agent.Name
	l.file = filepath.Join(l.dir, m.Agent.Name+".jsonl")
	l.loaded = true
	return nil
}

// requestLocal decides a call by the manifest, as the runtime would, and
// records it.
func (c *Client) requestLocal(_ context.Context, a Action) (*Call, error) {
	l := c.local
	if err := l.load(); err != nil {
		return nil, err
	}
	if a.IdempotencyKey == "" {
		a.IdempotencyKey = newUUID()
	}
	// The server's checks of a call's shape (manifest.CheckAsk), then its
	// summary's.
	declared, err := manifest.CheckAsk(a.Connector, a.Action, string(a.Risk), a.IdempotencyKey)
	if err != nil {
		return nil, askError(err)
	}
	if a.Risk == "" {
		a.Risk = RiskLow
	}
	if e := manifest.CheckSummary(a.Summary); e != nil {
		return nil, askError(e)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if id, ok := l.keys[a.IdempotencyKey]; ok {
		lc := l.calls[id]
		if lc == nil {
			return nil, newError(arxerr.CallClosed, id, "call %s is closed", id)
		}
		if lc.call.Connector != a.Connector || lc.call.Action != a.Action || lc.declared != declared {
			return nil, newError(arxerr.Conflict, "", "idempotency_key %q was used for a different call", a.IdempotencyKey)
		}
		cp := lc.call
		return &cp, nil
	}

	m := l.manifest
	d := m.Decide(a.Connector, a.Action, declared)
	now := time.Now()
	call := Call{ID: newUUID(), AgentID: l.agent, Connector: a.Connector, Action: a.Action, DeclaredRisk: a.Risk,
		Risk: Risk(d.Risk.String()), IdempotencyKey: a.IdempotencyKey, Summary: a.Summary, CreatedAt: now}
	// The entries the runtime would append, by the same constructors.
	ref := refOf(&call)
	actor := "agent:" + l.agent
	ask := record.Ask{DeclaredRisk: declared.String(), Summary: a.Summary, IdempotencyKey: a.IdempotencyKey}
	var entries []*record.Entry
	for _, dr := range d.Drift {
		entries = append(entries, record.DriftDetected(ref, actor, now, dr.Data()))
	}
	switch {
	case d.Refusal != "":
		call.Status, call.ExpiresAt = statusRefused, now
		entries = append(entries, record.CredentialRefused(ref, actor, now, ask, string(d.Refusal), d.Message))
	case d.NeedsApproval:
		call.Status, call.ExpiresAt = statusPending, now.Add(m.Approval.Timeout)
		entries = append(entries, record.CallRequested(ref, actor, now, ask),
			record.ApprovalRequested(ref, actor, now, m.Approval.Approvers, m.Approval.Delegates, call.ExpiresAt))
	default:
		call.Status, call.ExpiresAt = statusApproved, now.Add(m.CallTTL(a.Connector, a.Action))
		entries = append(entries, record.CredentialIssued(ref, actor, now, ask, call.ExpiresAt, ""))
		call.Credential = localCredential(&call)
	}
	if err := AppendLocalRecord(l.file, entries...); err != nil {
		return nil, err
	}
	if d.Refusal != "" {
		e := newError(d.Refusal, call.ID, "%s", d.Message)
		return nil, e
	}
	l.calls[call.ID] = &localCall{call: call, declared: declared}
	l.keys[a.IdempotencyKey] = call.ID
	cp := call
	return &cp, nil
}

// waitLocal decides a pending call as ARX_LOCAL_APPROVE says, and records
// the decision as a local one.
func (c *Client) waitLocal(ctx context.Context, callID string) (*Call, error) {
	l := c.local
	l.mu.Lock()
	lc := l.calls[callID]
	l.mu.Unlock()
	if lc == nil {
		return nil, newError(arxerr.CallNotFound, callID, "no open local call %s", callID)
	}
	if lc.call.Status != statusPending {
		cp := lc.call
		return &cp, decided(&cp)
	}
	who := localUser()
	var granted bool
	reason := ""
	switch l.approve {
	case LocalApproveAllow:
		granted, reason = true, "ARX_LOCAL_APPROVE=allow"
	case LocalApproveDeny:
		reason = "ARX_LOCAL_APPROVE=deny"
	default:
		// The summary is the agent's text, shown on a person's terminal:
		// inert, so it cannot clear the screen or rewrite the question.
		q := fmt.Sprintf("ARX local-only mode: approve %s risk call %s %s", lc.call.Risk, lc.call.Connector, lc.call.Action)
		if lc.call.Summary != "" {
			q += " (" + inert.Text(lc.call.Summary) + ")"
		}
		ok, err := l.ask(ctx, q+"? [y/N] ")
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("agentvault: waiting for approval of call %s: %w", callID, ctx.Err())
		case err != nil:
			reason = "no terminal to ask on (" + err.Error() + "); set ARX_LOCAL_APPROVE=allow or deny"
		default:
			granted, reason = ok, "answered on the terminal"
		}
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.call.Status != statusPending { // completed (withdrawn) meanwhile
		cp := lc.call
		return &cp, decided(&cp)
	}
	now := time.Now()
	base := record.Entry{Agent: l.agent, Call: callID, Connector: lc.call.Connector, Action: lc.call.Action,
		Risk: string(lc.call.Risk), Actor: "local:" + who, Time: now}
	decision := map[string]any{"local": true, "mode": l.approve, "approver": "local:" + who, "reason": reason}
	if !granted {
		e := base
		e.Type, e.Data = record.TypeApprovalDenied, decision
		if err := AppendLocalRecord(l.file, &e); err != nil {
			return nil, err
		}
		lc.call.Status = statusDenied
		completed := now
		lc.call.CompletedAt = &completed
		delete(l.calls, callID)
		cp := lc.call
		return &cp, newError(arxerr.CallDenied, callID, "call %s was denied in local-only mode: %s", callID, reason)
	}
	lc.call.Status = statusApproved
	lc.call.ExpiresAt = now.Add(l.manifest.CallTTL(lc.call.Connector, lc.call.Action))
	granted1 := base
	granted1.Type, granted1.Data = record.TypeApprovalGranted, decision
	// As the runtime writes it, with who approved it.
	ref := refOf(&lc.call)
	ask := record.Ask{DeclaredRisk: lc.declared.String(), Summary: lc.call.Summary, IdempotencyKey: lc.call.IdempotencyKey}
	issued := record.CredentialIssued(ref, "agent:"+l.agent, now, ask, lc.call.ExpiresAt, "local:"+who)
	if err := AppendLocalRecord(l.file, &granted1, issued); err != nil {
		lc.call.Status = statusPending
		return nil, err
	}
	lc.call.Credential = localCredential(&lc.call)
	cp := lc.call
	return &cp, nil
}

// completeLocal records the end of a local call: call.completed, or
// approval.withdrawn when it was still waiting.
func (c *Client) completeLocal(_ context.Context, callID string, o Outcome) (*Call, error) {
	l := c.local
	l.mu.Lock()
	defer l.mu.Unlock()
	lc := l.calls[callID]
	if lc == nil {
		return nil, newError(arxerr.CallNotFound, callID, "no open local call %s", callID)
	}
	now := time.Now()
	status := statusCompleted
	if o.Outcome != outcomeSuccess {
		status = statusFailed
	}
	ref := refOf(&lc.call)
	out := record.Outcome{Outcome: o.Outcome, Error: errorText(o.Error), DurationMS: max(o.Duration.Milliseconds(), 0)}
	var e *record.Entry
	if lc.call.Status == statusPending {
		status = statusFailed
		e = record.ApprovalWithdrawn(ref, "agent:"+l.agent, now, out)
	} else {
		out.Late = !now.Before(lc.call.ExpiresAt)
		e = record.CallCompleted(ref, "agent:"+l.agent, now, out)
	}
	if err := AppendLocalRecord(l.file, e); err != nil {
		return nil, err
	}
	lc.call.Status, lc.call.Outcome, lc.call.CompletedAt, lc.call.Credential = status, o.Outcome, &now, nil
	delete(l.calls, callID)
	delete(l.keys, lc.call.IdempotencyKey)
	cp := lc.call
	return &cp, nil
}

// localCredential is the stub credential of local-only mode: "local." and
// random hex, never a JWT, so it cannot be mistaken for one ARX issued.
func localCredential(call *Call) *Credential {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return &Credential{Token: LocalCredentialPrefix + hex.EncodeToString(b[:]), Type: "Bearer", CallID: call.ID,
		AgentID: call.AgentID, Connector: call.Connector, Action: call.Action, Risk: call.Risk, ExpiresAt: call.ExpiresAt}
}

// recordUnreachable records, under the local record directory, a call that
// was not made because the server could not be reached, and returns the
// error Request reports: cause, wrapped with ErrUnreachable.
func (c *Client) recordUnreachable(a Action, cause error) error {
	agent := c.agentID
	name := agent
	if name == "" {
		name = "unknown-agent"
	}
	file := filepath.Join(c.localDir, unsafeFileChars.ReplaceAllString(name, "_")+".jsonl")
	risk := a.Risk
	if risk == "" {
		risk = RiskLow
	}
	e := &record.Entry{Agent: agent, Connector: a.Connector, Action: a.Action, Risk: string(risk), Actor: "agent:" + agent,
		Type: TypeCallUnreachable, Time: time.Now(),
		Data: map[string]any{"declared_risk": string(risk), "summary": a.Summary, "idempotency_key": a.IdempotencyKey,
			"server": c.baseURL, "error": errorText(c.scrub(cause.Error()))}}
	where := "the attempt is recorded in " + file + "; attach it with `arx record import " + file + " --agent AGENT` once ARX is back"
	if err := AppendLocalRecord(file, e); err != nil {
		where = "recording the attempt locally failed too: " + err.Error()
	}
	return fmt.Errorf("%w, so the call was not made (%s): %w", ErrUnreachable, where, cause)
}

// AppendLocalRecord appends entries to the JSONL record at path, chaining
// each to its agent's previous entry in the file and numbering it by its
// line. It holds an exclusive lock on the file from reading the last entry
// until the new ones are written and synced, so that several processes can
// append to one file; the entries are durable when it returns nil.
func AppendLocalRecord(path string, entries ...*record.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("agentvault: local record: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("agentvault: local record: %w", err)
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		return fmt.Errorf("agentvault: local record %s: lock: %w", path, err)
	}
	defer unlockFile(f)
	next, heads, err := localHead(f, entries)
	if err != nil {
		return fmt.Errorf("agentvault: local record %s: %w (hint: check it with `arx record verify %s`)", path, err, filepath.Dir(path))
	}
	var buf bytes.Buffer
	for _, e := range entries {
		e.Index = next
		e.Prev = heads[e.Agent]
		b, err := e.Marshal()
		if err != nil {
			return fmt.Errorf("agentvault: local record: %w", err)
		}
		heads[e.Agent] = record.HashString(record.LeafHash(b))
		buf.Write(b)
		buf.WriteByte('\n')
		next++
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("agentvault: local record %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("agentvault: local record %s: %w", path, err)
	}
	if next == int64(len(entries)) { // a new file: make its name durable too
		if d, err := os.Open(filepath.Dir(path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return nil
}

// localHead reads the file's next index and, for the agents of entries, the
// leaf hash of their last entry. Only the last line is read when it belongs
// to the (single) agent being appended, which is the usual case.
func localHead(f *os.File, entries []*record.Entry) (int64, map[string]string, error) {
	heads := map[string]string{}
	agents := map[string]bool{}
	for _, e := range entries {
		agents[e.Agent] = true
		heads[e.Agent] = ""
	}
	st, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	size := st.Size()
	if size == 0 {
		return 0, heads, nil
	}
	// The last line: at most MaxEntrySize bytes and a newline.
	n := min(size, int64(record.MaxEntrySize)+1)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil && err != io.EOF {
		return 0, nil, err
	}
	if tail[len(tail)-1] != '\n' {
		return 0, nil, errors.New("the file ends in a partial line: a writer was interrupted; move the file aside to start a new chain")
	}
	tail = tail[:len(tail)-1]
	start := bytes.LastIndexByte(tail, '\n') + 1
	if start == 0 && n < size {
		return 0, nil, errors.New("the last line is longer than an entry may be")
	}
	last, err := record.Parse(tail[start:])
	if err != nil {
		return 0, nil, fmt.Errorf("the last line is not a record entry: %w", err)
	}
	if len(agents) == 1 && agents[last.Agent] {
		heads[last.Agent] = record.HashString(record.LeafHash(tail[start:]))
		return last.Index + 1, heads, nil
	}
	// Another agent wrote last: find each agent's last entry.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, nil, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), record.MaxEntrySize+1)
	for sc.Scan() {
		line := sc.Bytes()
		// Only the agent is needed here; the line's canonical form was
		// checked when it was appended, and verify checks it again.
		if e, err := record.Parse(line); err == nil && agents[e.Agent] {
			heads[e.Agent] = record.HashString(record.LeafHash(line))
		}
	}
	if err := sc.Err(); err != nil {
		return 0, nil, err
	}
	return last.Index + 1, heads, nil
}

// localUser names the person at the terminal, for local approval decisions.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if s := os.Getenv("USER"); s != "" {
		return s
	}
	return "unknown"
}

// askTerminal asks a yes/no question on the controlling terminal (not
// stdin, which the agent may use for its own input). It returns an error
// when the process has no terminal.
func askTerminal(ctx context.Context, question string) (bool, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return false, errors.New("cannot open /dev/tty")
	}
	type answer struct {
		yes bool
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		defer tty.Close()
		if _, err := io.WriteString(tty, question); err != nil {
			ch <- answer{err: err}
			return
		}
		line, err := bufio.NewReader(tty).ReadString('\n')
		if err != nil && line == "" {
			ch <- answer{err: err}
			return
		}
		s := strings.ToLower(strings.TrimSpace(line))
		ch <- answer{yes: s == "y" || s == "yes"}
	}()
	select {
	case a := <-ch:
		return a.yes, a.err
	case <-ctx.Done():
		tty.Close() // unblocks the read
		return false, ctx.Err()
	}
}
