package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// The redo log keeps a batch's writes to the database (people, tokens, the
// outbox: what the record does not hold) until the database has committed
// them. A batch that appends entries and writes the database commits in
// this order: its writes to the redo log (fsync), its entries to the log
// (fdatasync: the commit point), then the database transaction. A crash
// after the log's fdatasync loses the database transaction, and the next
// open applies the redo frame again; a crash before it leaves a frame whose
// entries are not in the log, which is never applied. So a state change
// and the entries that record it are durable together, though they live in
// two files.
//
// Frame: "ARXR", payload length (u32), CRC-32C of the payload (u32), then
// the payload: seq (u64), the index of the batch's last entry (u64) and its
// leaf hash (32 bytes), and the statements as JSON.

const redoMagic = "ARXR"

type redoLog struct {
	path string
	f    *os.File
	end  int64
	seq  uint64 // the last frame written or applied
}

type redoFrame struct {
	seq       uint64
	lastIndex int64
	lastLeaf  tlog.Hash
	stmts     []stmt
}

// stmt is one statement a batch ran on the database, with its arguments.
type stmt struct {
	Q string `json:"q"`
	A []arg  `json:"a"`
}

// arg is a statement argument: nil, int64, string or []byte.
type arg struct{ v any }

func (a arg) MarshalJSON() ([]byte, error) {
	switch v := a.v.(type) {
	case nil:
		return []byte("null"), nil
	case int64:
		return json.Marshal(map[string]string{"i": strconv.FormatInt(v, 10)})
	case string:
		return json.Marshal(map[string]string{"s": v})
	case []byte:
		return json.Marshal(map[string]string{"b": base64.StdEncoding.EncodeToString(v)})
	}
	return nil, fmt.Errorf("sqlite: redo: argument of type %T", a.v)
}

func (a *arg) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		a.v = nil
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 1 {
		return fmt.Errorf("sqlite: redo: bad argument %s", b)
	}
	var err error
	switch {
	case m["i"] != "":
		a.v, err = strconv.ParseInt(m["i"], 10, 64)
	case hasKey(m, "s"):
		a.v = m["s"]
	case hasKey(m, "b"):
		a.v, err = base64.StdEncoding.DecodeString(m["b"])
	default:
		err = fmt.Errorf("sqlite: redo: bad argument %s", b)
	}
	return err
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// args normalizes statement arguments to what a redo frame keeps.
func args(in []any) ([]arg, error) {
	out := make([]arg, len(in))
	for i, v := range in {
		switch v := v.(type) {
		case nil:
		case int:
			out[i].v = int64(v)
		case int64:
			out[i].v = v
		case string:
			out[i].v = v
		case []byte:
			out[i].v = bytes.Clone(v)
		case sql.NullInt64:
			if v.Valid {
				out[i].v = v.Int64
			}
		case sql.NullString:
			if v.Valid {
				out[i].v = v.String
			}
		default:
			return nil, fmt.Errorf("sqlite: redo: argument of type %T", v)
		}
	}
	return out, nil
}

func (a arg) value() any { return a.v }

func openRedo(path string) (*redoLog, []redoFrame, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite: redo log: %w", err)
	}
	r := &redoLog{path: path, f: f}
	var frames []redoFrame
	rd := io.NewSectionReader(f, 0, 1<<62)
	var hdr [12]byte
	for {
		if _, err := io.ReadFull(rd, hdr[:]); err != nil || string(hdr[:4]) != redoMagic {
			break
		}
		n := binary.BigEndian.Uint32(hdr[4:])
		if n < 48 || n > 256<<20 {
			break
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(rd, p); err != nil || crc32.Checksum(p, crcTable) != binary.BigEndian.Uint32(hdr[8:]) {
			break
		}
		fr := redoFrame{seq: binary.BigEndian.Uint64(p), lastIndex: int64(binary.BigEndian.Uint64(p[8:])), lastLeaf: tlog.Hash(p[16:48])}
		if err := json.Unmarshal(p[48:], &fr.stmts); err != nil {
			break
		}
		frames = append(frames, fr)
		r.end += 12 + int64(n)
		r.seq = max(r.seq, fr.seq)
	}
	return r, frames, nil
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// write appends a frame and makes it durable.
func (r *redoLog) write(fr redoFrame) error {
	js, err := json.Marshal(fr.stmts)
	if err != nil {
		return err
	}
	p := make([]byte, 48, 48+len(js))
	binary.BigEndian.PutUint64(p, fr.seq)
	binary.BigEndian.PutUint64(p[8:], uint64(fr.lastIndex))
	copy(p[16:], fr.lastLeaf[:])
	p = append(p, js...)
	b := make([]byte, 12, 12+len(p))
	copy(b, redoMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(len(p)))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(p, crcTable))
	b = append(b, p...)
	if _, err := r.f.WriteAt(b, r.end); err != nil {
		return fmt.Errorf("sqlite: redo log: %w", err)
	}
	if err := r.f.Sync(); err != nil {
		return fmt.Errorf("sqlite: redo log: %w", err)
	}
	r.end += int64(len(b))
	r.seq = max(r.seq, fr.seq)
	return nil
}

// reset empties the redo log once the database holds every frame's writes.
// It needs no sync: a frame that reappears after a crash carries a seq the
// database has applied, and is skipped.
func (r *redoLog) reset() {
	if r.end == 0 {
		return
	}
	if err := r.f.Truncate(0); err == nil || errors.Is(err, syscall.EROFS) {
		r.end = 0
	}
}

func (r *redoLog) close() error { return r.f.Close() }

// apply runs a frame's statements and records its seq, in one transaction.
func applyRedo(ctx context.Context, db *sql.DB, fr redoFrame) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, st := range fr.stmts {
		a := make([]any, len(st.A))
		for i, x := range st.A {
			a[i] = x.value()
		}
		if _, err := tx.ExecContext(ctx, st.Q, a...); err != nil {
			return fmt.Errorf("sqlite: redo: %w", err)
		}
	}
	if err := setMeta(ctx, tx, metaRedoSeq, strconv.FormatUint(fr.seq, 10)); err != nil {
		return err
	}
	return tx.Commit()
}

type execer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
}

func setMeta(ctx context.Context, db execer, key, value string) error {
	_, err := db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("sqlite: write meta: %w", err)
	}
	return nil
}

var _ = time.Now
