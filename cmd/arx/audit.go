package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/arxsec/arx/audit"
	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/publish"
	"github.com/arxsec/arx/internal/publish/bucketurl"
	"github.com/arxsec/arx/internal/publish/file"
	"github.com/arxsec/arx/internal/publish/s3"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
	"github.com/arxsec/arx/record/passkeys"
	"github.com/spf13/cobra"
)

// bucketOptions are the flags that name a bucket, for arx serve and arx
// audit alike. S3 credentials come from the standard AWS environment.
type bucketOptions struct {
	url, endpoint, region string
	pathStyle             bool
}

func addBucketFlags(cmd *cobra.Command, o *bucketOptions, usage string) {
	f := cmd.Flags()
	f.StringVar(&o.url, "bucket", envDefault("ARX_BUCKET", ""), usage+": s3://BUCKET/PREFIX or file:///DIR (env ARX_BUCKET)")
	f.StringVar(&o.endpoint, "s3-endpoint", envDefault("ARX_S3_ENDPOINT", os.Getenv("AWS_ENDPOINT_URL_S3")),
		"S3 endpoint, e.g. https://s3.eu-central-1.amazonaws.com or http://127.0.0.1:7070 (env ARX_S3_ENDPOINT, AWS_ENDPOINT_URL_S3; default AWS)")
	f.StringVar(&o.region, "s3-region", envDefault("AWS_REGION", os.Getenv("AWS_DEFAULT_REGION")), "S3 region (env AWS_REGION, AWS_DEFAULT_REGION)")
	f.BoolVar(&o.pathStyle, "s3-path-style", os.Getenv("ARX_S3_PATH_STYLE") == "1" || os.Getenv("ARX_S3_PATH_STYLE") == "true",
		"address the bucket in the path, not the host name (most S3-compatible servers; env ARX_S3_PATH_STYLE=1)")
}

func (o *bucketOptions) open() (publish.Bucket, error) {
	if o.url == "" {
		return nil, withHint(errors.New("no bucket"), "pass --bucket s3://BUCKET/PREFIX or --bucket file:///DIR")
	}
	b, err := bucketurl.Open(o.url, bucketurl.Options{S3: s3.Config{
		Endpoint: o.endpoint, Region: o.region, PathStyle: o.pathStyle,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: os.Getenv("AWS_SESSION_TOKEN"),
	}})
	if err != nil {
		return nil, withHint(err, "pass --bucket s3://BUCKET/PREFIX or --bucket file:///DIR")
	}
	return b, nil
}

// publishFlags adds to arx serve the flags that stream the log to a bucket,
// and fills cfg.Publish from them before the command runs.
func publishFlags(cmd *cobra.Command, cfg *server.Config) {
	var bo bucketOptions
	var witnesses []string
	var quorum int
	var publishEvery, witnessEvery time.Duration
	addBucketFlags(cmd, &bo, "publish the log to this bucket")
	f := cmd.Flags()
	f.StringArrayVar(&witnesses, "witness", nil, "a witness that cosigns checkpoints: URL=VKEY (its public key, or a file holding it); repeatable")
	f.IntVar(&quorum, "witness-quorum", 0, "witnesses that must cosign before a checkpoint is published (default: a majority)")
	f.DurationVar(&publishEvery, "publish-interval", publish.DefaultPublishInterval, "how often new entries are uploaded to the bucket")
	f.DurationVar(&witnessEvery, "witness-interval", publish.DefaultWitnessInterval, "how often a new checkpoint is cosigned and published while the log grows")
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if bo.url == "" {
			if len(witnesses) > 0 {
				return withHint(errors.New("--witness needs a bucket"), "pass --bucket s3://BUCKET/PREFIX or --bucket file:///DIR")
			}
			return run(cmd, args)
		}
		b, err := bo.open()
		if err != nil {
			return err
		}
		pc := &publish.Config{Bucket: b, Quorum: quorum, PublishInterval: publishEvery, WitnessInterval: witnessEvery}
		for _, w := range witnesses {
			u, k, ok := strings.Cut(w, "=")
			if !ok || !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
				return withHint(fmt.Errorf("--witness %q is not URL=VKEY", w), "pass --witness https://witness.example/=NAME+HASH+KEY")
			}
			pc.Witnesses = append(pc.Witnesses, publish.Witness{URL: u, VKey: keyArg(k)})
		}
		if quorum > len(witnesses) || quorum < 0 {
			return fmt.Errorf("--witness-quorum %d with %d witnesses", quorum, len(witnesses))
		}
		cfg.Publish = pc
		return run(cmd, args)
	}
}

// keyArg returns a key given on the command line, or read from the file it
// names.
func keyArg(s string) string {
	s = strings.TrimSpace(s)
	if b, err := os.ReadFile(s); err == nil {
		return strings.TrimSpace(string(b))
	}
	return s
}

func auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify a personnel record from its bucket and public keys alone",
		Long: `For auditors: these commands read only the bucket the record is published in
and check it against the public keys of the log and of the witnesses you
trust. They do not talk to ARX.`,
	}
	cmd.AddCommand(auditVerifyCmd(), auditProveCmd(), auditReceiptCmd())
	return cmd
}

// trustOptions are the keys an auditor trusts.
type trustOptions struct {
	logKey      string
	witnessKeys []string
	quorum      int
	cmd         *cobra.Command
}

func addTrustFlags(cmd *cobra.Command, t *trustOptions) {
	f := cmd.Flags()
	f.StringVar(&t.logKey, "log-key", "", "the log's public key (DATA_DIR/log.pub of arx serve), or a file holding it")
	f.StringArrayVar(&t.witnessKeys, "witness-key", nil, "public key of a witness you trust, or a file holding it; repeatable")
	f.IntVar(&t.quorum, "quorum", 0, "cosignatures required from those witnesses (default: a majority of them)")
	t.cmd = cmd
}

func (t *trustOptions) options() (audit.Options, error) {
	if t.logKey == "" {
		return audit.Options{}, withHint(errors.New("no log key"), "pass --log-key with the log's public key (DATA_DIR/log.pub of arx serve)")
	}
	o := audit.Options{LogKey: keyArg(t.logKey), Quorum: t.quorum}
	for _, k := range t.witnessKeys {
		o.WitnessKeys = append(o.WitnessKeys, keyArg(k))
	}
	if !t.cmd.Flags().Changed("quorum") && len(o.WitnessKeys) > 0 {
		o.Quorum = len(o.WitnessKeys)/2 + 1
	}
	if o.Quorum < 0 || o.Quorum > len(o.WitnessKeys) {
		return o, withHint(fmt.Errorf("--quorum %d with %d witness keys", o.Quorum, len(o.WitnessKeys)), "pass a --witness-key for each witness you trust")
	}
	return o, nil
}

// exitIncomplete is arx audit verify's exit code when the audit could not
// be completed.
const exitIncomplete = 2

func auditVerifyCmd() *cobra.Command {
	var bo bucketOptions
	var trust trustOptions
	var statePath string
	var witnessURLs []string
	var asJSON bool
	var verify func(*cobra.Command) error
	cmd := &cobra.Command{
		Use:   "verify --bucket URL --log-key KEY [--witness-key KEY ...] [--state FILE]",
		Short: "Verify the whole record in a bucket",
		Long: `Read the checkpoint and every entry bundle and hash tile from the bucket, and
check: the checkpoint is signed by the log key and cosigned by a quorum of
the witnesses you trust; every entry is canonical, at its index, and chained
to its agent's previous entry; the entries hash to the published tiles and to
the signed root; and, with --state, the log only grew since the checkpoint
verified last time (the file is updated when all holds). Names what it finds:
edited, deleted, inserted or reordered entries, a truncated log, a replaced
checkpoint, a fork. Exits 0 only when all holds, 1 when it found a problem,
and 2 when the audit could not be completed (the bucket or a witness could
not be read or asked).`,
		Args: cobra.NoArgs,
	}
	addBucketFlags(cmd, &bo, "the bucket the record is published in")
	addTrustFlags(cmd, &trust)
	cmd.Flags().StringVar(&statePath, "state", "", "file keeping the checkpoint verified last time; created if missing")
	cmd.Flags().StringArrayVar(&witnessURLs, "witness-url", nil, "ask this C2SP witness (its URL prefix) what it cosigned: the log must extend it; a witness that cannot be asked is an error; repeatable")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		err := verify(cmd)
		var ee exitError
		if err != nil && !errors.As(err, &ee) {
			return errorCode{code: exitIncomplete, err: err}
		}
		return err
	}
	verify = func(cmd *cobra.Command) error {
		opts, err := trust.options()
		if err != nil {
			return err
		}
		b, err := bo.open()
		if err != nil {
			return err
		}
		if statePath != "" {
			st, err := readState(statePath)
			if err != nil {
				return err
			}
			opts.Previous = st
		}
		for _, u := range witnessURLs {
			seen, err := audit.AskWitness(cmd.Context(), nil, u, auditSource(b), opts)
			var keyErr *audit.WitnessKeyError
			if errors.As(err, &keyErr) {
				return withHint(err, "pass its public key with --witness-key")
			}
			if err != nil {
				return withHint(err, "check the witness URL (the prefix its add-checkpoint is under), or leave out --witness-url")
			}
			opts.Seen = append(opts.Seen, seen)
		}
		bar := newProgress(cmd.ErrOrStderr())
		opts.Progress = bar.update
		rep, err := audit.Verify(cmd.Context(), auditSource(b), opts)
		bar.done()
		if err != nil {
			return withHint(fmt.Errorf("the audit could not be completed: %w", err), "check that the bucket is reachable, then run it again")
		}
		if statePath != "" && rep.State != nil {
			if err := writeState(statePath, rep.State); err != nil {
				return err
			}
		}
		printAudit(cmd.OutOrStdout(), b.String(), statePath, rep, asJSON)
		if !rep.OK {
			return exitError{code: 1}
		}
		return nil
	}
	return cmd
}

// auditSource is what the auditor reads the bucket through: a file://
// bucket as a directory, whose objects it reads into buffers it reuses.
func auditSource(b publish.Bucket) audit.Source {
	if fb, ok := b.(*file.Bucket); ok {
		return audit.Dir(fb.Dir())
	}
	return b
}

func printAudit(out io.Writer, bucket, statePath string, rep *audit.Report, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Bucket string `json:"bucket"`
			*audit.Report
		}{bucket, rep})
		return
	}
	inert.Fprintf(out, "bucket      %s\n", bucket)
	if rep.Origin != "" {
		inert.Fprintf(out, "log         %s\ncheckpoint  %d entries, root %s\n", rep.Origin, rep.Size, rep.Root)
		var ws []string
		for _, c := range rep.Cosignatures {
			ws = append(ws, fmt.Sprintf("%s (%s)", c.Witness, c.Time.Format(time.RFC3339)))
		}
		inert.Fprintf(out, "witnesses   %d cosigned, %d required", len(rep.Cosignatures), rep.Quorum)
		if len(ws) > 0 {
			inert.Fprintf(out, ": %s", strings.Join(ws, ", "))
		}
		inert.Fprintln(out)
	}
	for _, w := range rep.Seen {
		inert.Fprintf(out, "asked       %s: %d entries: %s\n", w.Who, w.Size, w.Verdict)
	}
	switch {
	case statePath == "":
		inert.Fprintf(out, "previous    not checked (pass --state FILE to check that the log only grows)\n")
	case rep.PreviousSize == 0 && rep.ConsistentWith == "":
		inert.Fprintf(out, "previous    none yet in %s\n", statePath)
	default:
		inert.Fprintf(out, "previous    %d entries (from %s): consistent: %s\n", rep.PreviousSize, statePath, dash(rep.ConsistentWith))
	}
	printDecisions(out, rep.Decisions)
	if rep.Receipts > 0 {
		inert.Fprintf(out, "receipts    %d termination receipts, each checked against its termination\n", rep.Receipts)
	}
	rate := ""
	if s := rep.Duration.Seconds(); s > 0 && rep.Entries > 0 {
		rate = fmt.Sprintf(" in %.2fs (%.0f entries/s)", s, float64(rep.Entries)/s)
	}
	if rep.OK {
		inert.Fprintf(out, "\nOK: %d entries from %d agents verified%s: each canonical, in its place and chained; they hash to the published tiles and the signed root\n",
			rep.Entries, rep.Agents, rate)
		return
	}
	inert.Fprintf(out, "\nFAILED: %d problem(s)\n", rep.ProblemCount)
	for _, p := range rep.Problems {
		inert.Fprintf(out, "  %s\n", p)
	}
	if len(rep.Problems) < rep.ProblemCount {
		inert.Fprintf(out, "  ... and %d more (the first %d are shown)\n", rep.ProblemCount-len(rep.Problems), len(rep.Problems))
	}
}

func auditReceiptCmd() *cobra.Command {
	var logKey string
	cmd := &cobra.Command{
		Use:   "receipt FILE --log-key KEY",
		Short: "Check a termination receipt (arx terminate --receipt FILE): signed with the log key, and what it confirms",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&logKey, "log-key", "", "the log's public key, or a file holding it (log.pub)")
	cmd.MarkFlagRequired("log-key")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		signed, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		e, err := audit.VerifyReceipt(signed, keyArg(logKey))
		if err != nil {
			return errorCode{code: 1, err: err}
		}
		w := cmd.OutOrStdout()
		inert.Fprintf(w, "OK: a termination receipt signed with the log key: agent %s, terminated at %s, record entry %d\n",
			e.Agent, record.Str(e.Data, "terminated_at"), e.Index)
		inert.Fprintf(w, "(check it is in the log: arx audit prove --index %d)\n", e.Index)
		printReceiptItems(w, record.ReceiptItemsOf(e, "confirmed"), record.ReceiptItemsOf(e, "unconfirmed"))
		return nil
	}
	return cmd
}

// printDecisions says, per agent, how many approval decisions were signed
// with the approver's passkey (each checked) and how many were not.
func printDecisions(out io.Writer, agents []passkeys.Agent) {
	if len(agents) == 0 {
		inert.Fprintf(out, "approvals   no decisions in the log\n")
		return
	}
	var signed, unsigned int64
	for _, a := range agents {
		signed += a.Signed
		unsigned += a.Unsigned
	}
	inert.Fprintf(out, "approvals   %d decisions signed with the approver's passkey (checked), %d not signed\n", signed, unsigned)
	const most = 20
	for i, a := range agents {
		if i == most {
			inert.Fprintf(out, "            ... and %d more agents (--json lists all)\n", len(agents)-most)
			break
		}
		name := a.Name
		if name == "" {
			name = a.ID
		}
		req := ""
		if a.RequirePasskey {
			req = ", passkey required"
		}
		inert.Fprintf(out, "            %s: %d signed, %d unsigned%s\n", name, a.Signed, a.Unsigned, req)
	}
}

func readState(path string) (*audit.State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st audit.State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, withHint(fmt.Errorf("state file %s: %w", path, err), "it is written by arx audit verify --state; restore it from a backup")
	}
	return &st, nil
}

func writeState(path string, st *audit.State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func auditProveCmd() *cobra.Command {
	var bo bucketOptions
	var trust trustOptions
	var index int64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "prove --bucket URL --log-key KEY --index N",
		Short: "Print and check the inclusion proof of one entry",
		Args:  cobra.NoArgs,
	}
	addBucketFlags(cmd, &bo, "the bucket the record is published in")
	addTrustFlags(cmd, &trust)
	cmd.Flags().Int64Var(&index, "index", -1, "the entry's index in the log")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the proof as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if index < 0 {
			return withHint(errors.New("no entry index"), "pass --index N")
		}
		opts, err := trust.options()
		if err != nil {
			return err
		}
		b, err := bo.open()
		if err != nil {
			return err
		}
		p, err := audit.Prove(cmd.Context(), b, opts, index)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(p)
		}
		inert.Fprintf(out, "entry       %s\nleaf hash   %s\ntree        %d entries, root %s\nproof       %s\n\nOK: entry %d is in the log the checkpoint commits to\n",
			string(p.Entry), p.LeafHash, p.TreeSize, p.Root, strings.Join(p.Hashes, "\n            "), p.Index)
		return nil
	}
	return cmd
}

// progress draws a bar on a terminal; elsewhere it stays silent.
type progress struct {
	w     io.Writer
	on    bool
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.on = true
		}
	}
	return p
}

func (p *progress) update(done, total int64) {
	if !p.on || total < 100_000 || time.Since(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	const width = 40
	filled := int(done * width / max(total, 1))
	inert.Fprintf(p.w, "\r[%s%s] %3d%% %s/%s entries", strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		done*100/max(total, 1), strconv.FormatInt(done, 10), strconv.FormatInt(total, 10))
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
