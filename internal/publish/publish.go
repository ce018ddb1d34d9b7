// Package publish streams the personnel record to the customer's bucket:
// entry bundles and hash tiles in the C2SP tlog-tiles layout within seconds
// of commit, and beside them the latest checkpoint, once a quorum of
// witnesses has cosigned it (C2SP tlog-witness).
//
// It promises: nothing is lost and nothing is published out of order. The
// database is the durable spool: the publisher reads committed entries from
// the store, and keeps how far it got (the published size, a checkpoint
// size) in the store's meta table, advancing it only after every object up
// to that size is stored. When the bucket or a witness is unreachable it
// retries, and resumes in order where it stopped. It publishes only a tree
// whose entries hash to the log's signed checkpoint, and only a checkpoint
// consistent with the one it published before.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Config configures a Publisher.
type Config struct {
	Store  store.Store
	Bucket Bucket
	// LogKey is the log's public key: what is published is checked with it.
	LogKey string
	// Witnesses cosign checkpoints; Quorum of them must cosign before a
	// checkpoint is published (default: a majority). Without witnesses the
	// log-signed checkpoint is published as it is.
	Witnesses []Witness
	Quorum    int
	// PublishInterval is how often new entries are uploaded.
	PublishInterval time.Duration
	// WitnessInterval is how often a new checkpoint is cosigned and
	// published while the log grows.
	WitnessInterval time.Duration
	// WitnessTimeout bounds one round of asking the witnesses.
	WitnessTimeout time.Duration
	// ObjectTimeout bounds one object upload.
	ObjectTimeout time.Duration
	// Leading, when set, is asked just before a checkpoint is written to
	// the bucket, the one write that must not race another publisher: an
	// error (this process no longer leads, store.Lease.Check) refuses it.
	Leading func(ctx context.Context) error
	Logger  *slog.Logger
	// Registerer gets the publisher's metrics (nil: not registered).
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Defaults.
const (
	DefaultPublishInterval = 2 * time.Second
	DefaultWitnessInterval = 5 * time.Minute
	DefaultWitnessTimeout  = 10 * time.Second
	DefaultObjectTimeout   = 30 * time.Second
	// uploads in flight at once
	uploadWorkers = 8
	// entries read from the store at once
	readBatch = 16 * record.TileWidth
)

// Meta keys: the publisher's durable progress.
const (
	metaBucket         = "publish.bucket"          // which bucket the progress is about
	metaSize           = "publish.size"            // every object of the tree of this size is in the bucket
	metaSigned         = "publish.signed"          // the log's signed checkpoint of that size
	metaCheckpoint     = "publish.checkpoint"      // the (cosigned) checkpoint in the bucket
	metaCheckpointTime = "publish.checkpoint_time" // when it was published, Unix nanoseconds
)

// Status is how far publishing got.
type Status struct {
	Size           int64     // entries in the bucket (with their tiles)
	CheckpointSize int64     // entries the bucket's checkpoint commits to
	CheckpointTime time.Time // when that checkpoint was published
	// Cosigned are the configured witnesses whose cosignature is on that
	// checkpoint, with the time each gave; Witnesses, all configured.
	Cosigned  []record.Cosignature
	Witnesses int
}

// Publisher uploads the log to a bucket.
type Publisher struct {
	cfg       Config
	log       *slog.Logger
	witnesses []*witnessClient
	m         *metrics

	mu         sync.Mutex // one round at a time
	loaded     bool
	size       int64
	signed     []byte
	cpSize     int64
	cpRoot     tlog.Hash
	prevCPSize int64
	cpTime     time.Time
	cpCosigned []record.Cosignature // on the checkpoint published last
	nextCosign time.Time
	backoff    time.Duration
	cosignErr  error              // why the last checkpoint attempt failed; nil once one succeeds
	partials   map[string]tileRef // partial objects written by this process, for cleanup

	status   atomic.Pointer[Status]
	failing  bool
	lastWarn time.Time
	lastErr  atomic.Pointer[string] // the last round's failure; nil when it succeeded
}

// New returns a Publisher; Run starts it.
func New(cfg Config) (*Publisher, error) {
	if cfg.Store == nil || cfg.Bucket == nil {
		return nil, errors.New("publish: a store and a bucket are required")
	}
	if _, err := note.NewVerifier(cfg.LogKey); err != nil {
		return nil, fmt.Errorf("publish: log key: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublishInterval <= 0 {
		cfg.PublishInterval = DefaultPublishInterval
	}
	if cfg.WitnessInterval <= 0 {
		cfg.WitnessInterval = DefaultWitnessInterval
	}
	if cfg.WitnessTimeout <= 0 {
		cfg.WitnessTimeout = DefaultWitnessTimeout
	}
	if cfg.ObjectTimeout <= 0 {
		cfg.ObjectTimeout = DefaultObjectTimeout
	}
	if cfg.Quorum == 0 && len(cfg.Witnesses) > 0 {
		cfg.Quorum = len(cfg.Witnesses)/2 + 1 // a majority
	}
	if cfg.Quorum < 0 || cfg.Quorum > len(cfg.Witnesses) {
		return nil, fmt.Errorf("publish: a quorum of %d witnesses out of %d configured", cfg.Quorum, len(cfg.Witnesses))
	}
	p := &Publisher{cfg: cfg, log: cfg.Logger, partials: map[string]tileRef{}}
	client := &http.Client{Timeout: cfg.WitnessTimeout}
	seen := map[string]bool{}
	for _, w := range cfg.Witnesses {
		v, err := record.NewCosignatureVerifier(w.VKey)
		if err != nil {
			return nil, fmt.Errorf("publish: witness %s: %w", redact(w.URL), err)
		}
		if seen[v.Name()] {
			return nil, fmt.Errorf("publish: witness %s is configured twice", v.Name())
		}
		seen[v.Name()] = true
		p.witnesses = append(p.witnesses, &witnessClient{w: w, name: v.Name(), http: client, size: -1})
	}
	p.status.Store(&Status{})
	p.m = newMetrics(cfg.Registerer, p)
	return p, nil
}

// redact hides the password of a URL an operator may have given with one.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(a witness URL that does not parse)"
}

// Status reports how far publishing got.
func (p *Publisher) Status() Status { return *p.status.Load() }

// Bucket names the bucket published to.
func (p *Publisher) Bucket() string { return p.cfg.Bucket.String() }

// LastError is why the last publishing round of Run failed, or "" when it
// succeeded.
func (p *Publisher) LastError() string {
	if e := p.lastErr.Load(); e != nil {
		return *e
	}
	return ""
}

// Run publishes every PublishInterval until ctx ends. It first reads the
// progress kept in the store again: with several replicas, another one
// may have published since this one last ran. Only one Run may publish to
// a bucket at a time (the server elects it, store.Leader).
func (p *Publisher) Run(ctx context.Context) error {
	p.mu.Lock()
	p.loaded, p.backoff, p.cosignErr, p.nextCosign = false, 0, nil, time.Time{}
	p.mu.Unlock()
	t := time.NewTicker(p.cfg.PublishInterval)
	defer t.Stop()
	for {
		err := p.round(ctx, false)
		if ctx.Err() != nil {
			return nil
		}
		p.report(err)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Follow reads how far publishing got from the store, for Status and the
// metrics of a replica that does not publish itself. It writes nothing.
func (p *Publisher) Follow(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	get := func(key string) (string, error) {
		v, err := p.cfg.Store.Meta(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil
		}
		return v, err
	}
	var vals [4]string
	for i, key := range []string{metaBucket, metaSize, metaCheckpoint, metaCheckpointTime} {
		v, err := get(key)
		if err != nil {
			return err
		}
		vals[i] = v
	}
	st := Status{}
	if vals[0] == p.cfg.Bucket.String() {
		st.Size, _ = strconv.ParseInt(vals[1], 10, 64)
		if cp, _, err := record.OpenCheckpoint([]byte(vals[2]), p.cfg.LogKey); err == nil {
			st.CheckpointSize = int64(cp.Size)
		}
		if ns, _ := strconv.ParseInt(vals[3], 10, 64); ns > 0 && st.CheckpointSize > 0 {
			st.CheckpointTime = time.Unix(0, ns)
		}
	}
	p.loaded = false // Run reads it all again
	p.lastErr.Store(nil)
	p.status.Store(&st)
	p.m.published.Set(float64(st.Size))
	p.m.checkpointSize.Set(float64(st.CheckpointSize))
	if tree, err := p.cfg.Store.TreeSize(ctx); err == nil {
		p.m.pending.Set(float64(tree - st.Size))
	}
	return nil
}

// SetLeading sets the arx_publish_leader gauge: whether this process is
// the one that publishes.
func (p *Publisher) SetLeading(leading bool) {
	v := 0.0
	if leading {
		v = 1
	}
	p.m.leader.Set(v)
}

// PublishNow uploads what the store's latest checkpoint covers and
// publishes a checkpoint at once, whatever the witness interval says.
func (p *Publisher) PublishNow(ctx context.Context) error {
	return p.round(ctx, true)
}

// report logs failures without flooding: the first, then one a minute, and
// the recovery.
func (p *Publisher) report(err error) {
	if err != nil {
		msg := err.Error()
		p.lastErr.Store(&msg)
	} else {
		p.lastErr.Store(nil)
	}
	now := p.cfg.Now()
	switch {
	case err == nil && p.failing:
		p.failing = false
		p.log.Info("publishing resumed", "bucket", p.cfg.Bucket.String(), "size", p.Status().Size)
	case err != nil && (!p.failing || now.Sub(p.lastWarn) >= time.Minute):
		p.failing, p.lastWarn = true, now
		p.log.Warn("publishing to the bucket failed; entries wait in the database and are uploaded when it works again",
			"bucket", p.cfg.Bucket.String(), "err", err)
	}
}

func (p *Publisher) round(ctx context.Context, force bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(ctx); err != nil {
		return err
	}
	latest, err := p.cfg.Store.LatestCheckpoint(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	cp, _, err := record.OpenCheckpoint(latest.Signed, p.cfg.LogKey)
	if err != nil {
		return fmt.Errorf("the store's latest checkpoint: %w", err)
	}
	size := int64(cp.Size)
	switch {
	case size < p.size:
		return fmt.Errorf("the store's latest checkpoint has %d entries, %d are published already: was the database restored from an older backup?", size, p.size)
	case size > p.size:
		if err := p.upload(ctx, p.size, size, tlog.Hash(cp.Hash)); err != nil {
			p.m.errors.WithLabelValues("upload").Inc()
			return err
		}
		if err := p.saveMeta(ctx, metaSize, strconv.FormatInt(size, 10), metaSigned, string(latest.Signed)); err != nil {
			return err
		}
		p.size, p.signed = size, latest.Signed
		p.setStatus()
	}
	if tree, err := p.cfg.Store.TreeSize(ctx); err == nil {
		p.m.pending.Set(float64(tree - p.size))
	}
	var pending error
	if p.size > p.cpSize {
		if force || !p.cfg.Now().Before(p.nextCosign) {
			if err := p.publishCheckpoint(ctx); err != nil {
				p.backoff = min(max(2*p.backoff, p.cfg.PublishInterval), time.Minute, p.cfg.WitnessInterval)
				p.nextCosign = p.cfg.Now().Add(p.backoff)
				p.cosignErr = err
				return err
			}
			p.backoff, p.cosignErr = 0, nil
			if len(p.witnesses) > 0 {
				p.nextCosign = p.cpTime.Add(p.cfg.WitnessInterval)
			}
		} else {
			// Waiting out the backoff after a failed attempt: the round
			// is not healthy until a checkpoint is published, so LastError
			// keeps the reason rather than flipping to "" in between.
			pending = p.cosignErr
		}
	}
	p.cleanup(ctx)
	return pending
}

// load reads the progress kept in the store once.
func (p *Publisher) load(ctx context.Context) error {
	if p.loaded {
		return nil
	}
	get := func(key string) (string, error) {
		v, err := p.cfg.Store.Meta(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil
		}
		return v, err
	}
	bucket, err := get(metaBucket)
	if err != nil {
		return err
	}
	if bucket != p.cfg.Bucket.String() {
		if bucket != "" {
			p.log.Info("publishing to a new bucket, from the first entry", "bucket", p.cfg.Bucket.String(), "before", bucket)
		}
		err := p.saveMeta(ctx, metaBucket, p.cfg.Bucket.String(), metaSize, "0", metaSigned, "", metaCheckpoint, "", metaCheckpointTime, "0")
		if err != nil {
			return err
		}
		p.loaded = true
		return nil
	}
	size, _ := get(metaSize)
	signed, _ := get(metaSigned)
	cpNote, _ := get(metaCheckpoint)
	cpTime, err := get(metaCheckpointTime)
	if err != nil {
		return err
	}
	if p.size, err = strconv.ParseInt(size, 10, 64); err != nil && size != "" {
		return fmt.Errorf("publish: meta %s = %q", metaSize, size)
	}
	p.signed = []byte(signed)
	// The partial objects an earlier process wrote last are cleaned up
	// once their full tiles are in (those of its earlier rounds, whose
	// full tiles were not in yet either, stay: a few per restart).
	p.seedPartials(p.size)
	if cpNote != "" {
		cp, _, err := record.OpenCheckpoint([]byte(cpNote), p.cfg.LogKey)
		if err != nil {
			return fmt.Errorf("publish: the checkpoint published last: %w", err)
		}
		p.cpSize, p.cpRoot = int64(cp.Size), tlog.Hash(cp.Hash)
		p.cpCosigned = p.cosigners([]byte(cpNote))
		p.seedPartials(p.cpSize)
		p.prevCPSize = p.cpSize
		for _, w := range p.witnesses {
			w.size = p.cpSize // a good first guess; a 409 corrects it
		}
	}
	if p.cpSize > 0 {
		// A bucket emptied behind our back (restored, recreated) gets the
		// whole log again rather than a gap.
		gctx, cancel := context.WithTimeout(ctx, p.cfg.ObjectTimeout)
		_, err := p.cfg.Bucket.Get(gctx, record.CheckpointPath)
		cancel()
		if IsNotExist(err) {
			p.log.Warn("the bucket has lost its checkpoint: publishing the whole log again", "bucket", p.cfg.Bucket.String())
			if err := p.saveMeta(ctx, metaSize, "0", metaSigned, "", metaCheckpoint, "", metaCheckpointTime, "0"); err != nil {
				return err
			}
			p.size, p.signed, p.cpSize, p.cpRoot, p.prevCPSize = 0, nil, 0, tlog.Hash{}, 0
			for _, w := range p.witnesses {
				w.size = -1
			}
			p.loaded = true
			p.setStatus()
			return nil
		}
	}
	if ns, _ := strconv.ParseInt(cpTime, 10, 64); ns > 0 {
		p.cpTime = time.Unix(0, ns)
		if len(p.witnesses) > 0 {
			p.nextCosign = p.cpTime.Add(p.cfg.WitnessInterval)
		}
	}
	p.loaded = true
	p.setStatus()
	return nil
}

func (p *Publisher) setStatus() {
	p.status.Store(&Status{Size: p.size, CheckpointSize: p.cpSize, CheckpointTime: p.cpTime, Cosigned: p.cpCosigned, Witnesses: len(p.witnesses)})
	p.m.published.Set(float64(p.size))
	p.m.checkpointSize.Set(float64(p.cpSize))
}

func (p *Publisher) saveMeta(ctx context.Context, kv ...string) error {
	return p.cfg.Store.Update(ctx, func(tx store.Tx) error {
		for i := 0; i+1 < len(kv); i += 2 {
			if err := tx.SetMeta(kv[i], kv[i+1]); err != nil {
				return err
			}
		}
		return nil
	})
}

// upload stores the entry bundles and hash tiles that the tree of size to
// has and the tree of size from has not, and checks that the entries hash to
// root, the signed checkpoint's.
func (p *Publisher) upload(ctx context.Context, from, to int64, root tlog.Hash) error {
	tree := &record.Tree{}
	if from > 0 {
		fr, err := p.cfg.Store.ReadHashes(ctx, record.FrontierIndexes(from))
		if err != nil {
			return err
		}
		if tree, err = record.NewTree(from, fr); err != nil {
			return err
		}
	}
	levels := record.TileLevels(to)
	fresh := make([][]tlog.Hash, levels) // per level L >= 1: the hashes completed since from
	up := newUploader(ctx, p.cfg.Bucket, p.cfg.ObjectTimeout)
	var done [8]tlog.Hash
	var bundle, tile []byte
	for pos := from / record.TileWidth * record.TileWidth; pos < to; {
		es, err := p.cfg.Store.Entries(ctx, pos, int(min(to-pos, readBatch)))
		if err != nil {
			up.wait()
			return err
		}
		if len(es) == 0 {
			up.wait()
			return fmt.Errorf("the store has no entry %d, its checkpoint has %d", pos, to)
		}
		for _, e := range es {
			if pos >= to {
				break
			}
			if e.Index != pos {
				up.wait()
				return fmt.Errorf("the store returned entry %d where %d belongs", e.Index, pos)
			}
			leaf := record.LeafHash(e.Data)
			if leaf != e.Leaf {
				up.wait()
				return fmt.Errorf("entry %d: the stored leaf hash does not match its bytes", pos)
			}
			if bundle, err = record.AppendBundleEntry(bundle, e.Data); err != nil {
				up.wait()
				return fmt.Errorf("entry %d: %w", pos, err)
			}
			tile = append(tile, leaf[:]...)
			if pos >= from {
				k := tree.AppendLeafTiles(leaf, &done)
				for j := 0; j < k && j+1 < levels; j++ {
					fresh[j+1] = append(fresh[j+1], done[j])
				}
			}
			pos++
			if pos%record.TileWidth == 0 || pos == to {
				n := (pos - 1) / record.TileWidth
				w := int(pos - n*record.TileWidth)
				p.put(up, record.BundlePath(n, w), bundle, tileRef{0, n, w})
				p.put(up, record.TilePath(0, n, w), tile, tileRef{0, n, w})
				bundle, tile = nil, nil
			}
		}
	}
	if got := tree.Root(); got != root {
		up.wait()
		return fmt.Errorf("the store's entries %d..%d do not hash to its signed checkpoint's root: refusing to publish", from, to-1)
	}
	for l := 1; l < levels; l++ {
		shift := uint(record.TileHeight * l)
		lo, hi := from>>shift, to>>shift
		if hi == lo {
			continue // nothing new at this level
		}
		if int64(len(fresh[l])) != hi-lo {
			up.wait()
			return fmt.Errorf("publish: %d new hashes at level %d, want %d", len(fresh[l]), l, hi-lo)
		}
		for n := lo / record.TileWidth; n <= (hi-1)/record.TileWidth; n++ {
			first := n * record.TileWidth
			w := int(min(hi-first, record.TileWidth))
			data := make([]byte, 0, w*tlog.HashSize)
			if first < lo {
				idx := make([]int64, 0, lo-first)
				for k := first; k < lo; k++ {
					idx = append(idx, tlog.StoredHashIndex(record.TileHeight*l, k))
				}
				old, err := p.cfg.Store.ReadHashes(ctx, idx)
				if err != nil {
					up.wait()
					return err
				}
				for _, h := range old {
					data = append(data, h[:]...)
				}
			}
			for _, h := range fresh[l][max(first, lo)-lo : first+int64(w)-lo] {
				data = append(data, h[:]...)
			}
			p.put(up, record.TilePath(l, n, w), data, tileRef{l, n, w})
		}
	}
	return up.wait()
}

// tileRef names a tile (or entry bundle): its level, index and width.
type tileRef struct {
	level int
	n     int64
	width int
}

func (p *Publisher) put(up *uploader, path string, data []byte, t tileRef) {
	if t.width < record.TileWidth {
		p.partials[path] = t
	}
	up.put(path, data)
}

// publishCheckpoint has the witnesses cosign the checkpoint of the
// published size and puts it in the bucket.
func (p *Publisher) publishCheckpoint(ctx context.Context) error {
	signed, size := p.signed, p.size
	cp, _, err := record.OpenCheckpoint(signed, p.cfg.LogKey)
	if err != nil {
		return err
	}
	root := tlog.Hash(cp.Hash)
	prove := func(old int64) (tlog.TreeProof, error) {
		return tlog.ProveTree(size, old, store.HashReader(ctx, p.cfg.Store))
	}
	if p.cpSize > 0 {
		// Never publish, or ask a witness to cosign, a checkpoint that is
		// not consistent with the one published before.
		proof, err := prove(p.cpSize)
		if err == nil {
			err = tlog.CheckTree(proof, size, root, p.cpSize, p.cpRoot)
		}
		if err != nil {
			p.m.errors.WithLabelValues("consistency").Inc()
			return fmt.Errorf("the log of size %d is not consistent with the checkpoint of size %d published before: refusing to publish (%v)", size, p.cpSize, err)
		}
	}
	out := signed
	cosigned := []string{} // the witnesses whose cosignature is on it
	if len(p.witnesses) > 0 {
		lines, errs := cosignQuorum(ctx, p.witnesses, p.cfg.WitnessTimeout, signed, size, p.cfg.LogKey, prove)
		for name, err := range errs {
			p.m.witnessFailures.WithLabelValues(name).Inc()
			p.log.Warn("witness did not cosign", "witness", name, "size", size, "err", err)
		}
		if got := len(p.witnesses) - len(errs); got < p.cfg.Quorum {
			p.m.errors.WithLabelValues("witness").Inc()
			var why []string // which witnesses failed and how: LastError and the console show it
			for _, w := range p.witnesses {
				if err := errs[w.name]; err != nil {
					why = append(why, err.Error())
				}
			}
			return fmt.Errorf("%d of %d witnesses cosigned the checkpoint of size %d, the quorum is %d: %s", got, len(p.witnesses), size, p.cfg.Quorum, strings.Join(why, "; "))
		}
		out = record.AppendSignatures(signed, lines...)
		for _, w := range p.witnesses {
			if errs[w.name] == nil {
				cosigned = append(cosigned, w.name)
			}
		}
	}
	octx, cancel := context.WithTimeout(ctx, p.cfg.ObjectTimeout)
	defer cancel()
	if p.cfg.Leading != nil {
		if err := p.cfg.Leading(octx); err != nil {
			return fmt.Errorf("not writing the checkpoint: this replica no longer leads publishing: %w", err)
		}
	}
	// Never move the bucket's checkpoint backwards, even with a second
	// publisher racing this one (a replica elected while this one hung,
	// or one publishing with another database).
	if cur, err := p.cfg.Bucket.Get(octx, record.CheckpointPath); err == nil {
		if c, _, err := record.OpenCheckpoint(cur, p.cfg.LogKey); err == nil && int64(c.Size) > size {
			return fmt.Errorf("the bucket's checkpoint has %d entries, more than %d: another publisher writes to this bucket (replicas of one deployment elect one publisher; is another deployment publishing here?)", c.Size, size)
		}
	} else if !IsNotExist(err) {
		p.m.errors.WithLabelValues("checkpoint").Inc()
		return err
	}
	if err := p.cfg.Bucket.Put(octx, record.CheckpointPath, out, PutOptions{ContentType: "text/plain; charset=utf-8"}); err != nil {
		p.m.errors.WithLabelValues("checkpoint").Inc()
		return err
	}
	now := p.cfg.Now()
	if err := p.saveMeta(ctx, metaCheckpoint, string(out), metaCheckpointTime, strconv.FormatInt(now.UnixNano(), 10)); err != nil {
		return err
	}
	p.prevCPSize, p.cpSize, p.cpRoot, p.cpTime = p.cpSize, size, root, now
	p.cpCosigned = p.cosigners(out)
	p.setStatus()
	p.log.Info("checkpoint published", "bucket", p.cfg.Bucket.String(), "size", size, "cosignatures", len(cosigned), "cosigned_by", cosigned)
	return nil
}

// cleanup deletes the partial tiles and bundles whose full tile is in the
// bucket, as c2sp.org/tlog-tiles allows: a partial tile of a size a
// checkpoint was published for is served until then (a reader of an older
// checkpoint takes the prefix of the full one). p.size is what the bucket
// holds (tiles are uploaded before the size is saved).
func (p *Publisher) cleanup(ctx context.Context) {
	for path, t := range p.partials {
		if full, _ := record.TileWidthAt(p.size, t.level); t.n >= full {
			continue // no full tile yet
		}
		dctx, cancel := context.WithTimeout(ctx, p.cfg.ObjectTimeout)
		err := p.cfg.Bucket.Delete(dctx, path)
		cancel()
		if err != nil {
			p.log.Debug("delete partial tile", "path", path, "err", err)
			return
		}
		delete(p.partials, path)
	}
}

// cosigners are the configured witnesses whose valid cosignature is on a
// checkpoint published.
func (p *Publisher) cosigners(signed []byte) []record.Cosignature {
	var keys []string
	for _, w := range p.witnesses {
		keys = append(keys, w.w.VKey)
	}
	cs, err := record.OpenCosigned(signed, p.cfg.LogKey, keys)
	if err != nil {
		return nil
	}
	return cs.Cosigs
}

// seedPartials adds the partial objects of the tree of the given size to
// those cleanup deletes once their full tiles are in.
func (p *Publisher) seedPartials(size int64) {
	for l := 0; l < record.TileLevels(size); l++ {
		full, w := record.TileWidthAt(size, l)
		if w == 0 {
			continue
		}
		t := tileRef{l, full, w}
		if l == 0 {
			p.partials[record.BundlePath(full, w)] = t
		}
		p.partials[record.TilePath(l, full, w)] = t
	}
}

// PartialPaths lists the partial objects of the tree of the given size: the
// partial entry bundle and the partial tile of each level.
func PartialPaths(size int64) []string {
	var out []string
	for l := 0; l < record.TileLevels(size); l++ {
		full, w := record.TileWidthAt(size, l)
		if w == 0 {
			continue
		}
		if l == 0 {
			out = append(out, record.BundlePath(full, w))
		}
		out = append(out, record.TilePath(l, full, w))
	}
	return out
}

// uploader puts objects with bounded concurrency and keeps the first error.
type uploader struct {
	parent  context.Context
	ctx     context.Context
	cancel  context.CancelFunc
	bucket  Bucket
	timeout time.Duration
	sem     chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	err     error
}

func newUploader(ctx context.Context, b Bucket, timeout time.Duration) *uploader {
	cctx, cancel := context.WithCancel(ctx)
	return &uploader{parent: ctx, ctx: cctx, cancel: cancel, bucket: b, timeout: timeout, sem: make(chan struct{}, uploadWorkers)}
}

func (u *uploader) put(path string, data []byte) {
	select {
	case u.sem <- struct{}{}:
	case <-u.ctx.Done():
		return
	}
	u.wg.Add(1)
	go func() {
		defer func() { <-u.sem; u.wg.Done() }()
		ctx, cancel := context.WithTimeout(u.ctx, u.timeout)
		defer cancel()
		if err := u.bucket.Put(ctx, path, data, PutOptions{ContentType: "application/octet-stream", Immutable: true}); err != nil {
			u.mu.Lock()
			if u.err == nil {
				u.err = err
				u.cancel()
			}
			u.mu.Unlock()
		}
	}()
}

// wait waits for every upload and returns the first error.
func (u *uploader) wait() error {
	u.wg.Wait()
	u.cancel()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err == nil {
		return u.parent.Err() // puts skipped because the caller gave up
	}
	return u.err
}

// Flush runs one publishing round now (the checkpoint is published only if
// it is due).
func (p *Publisher) Flush(ctx context.Context) error {
	return p.round(ctx, false)
}
