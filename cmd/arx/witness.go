package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/arxsec/arx/internal/inert"
	"github.com/arxsec/arx/internal/witness"
	"github.com/arxsec/arx/record"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"
)

func witnessCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "witness",
		Short: "Run an independent witness that cosigns log checkpoints (C2SP tlog-witness)",
		Long: `A witness cosigns a log's checkpoint only when it is consistent with the
latest one it cosigned for that log, so a log cannot be rolled back or shown
differently to different parties without the witnesses refusing. Run it on
another machine, under another owner, than arx serve.`,
	}
	cmd.AddCommand(witnessKeygenCmd(), witnessServeCmd())
	return cmd
}

func witnessKeygenCmd() *cobra.Command {
	var name, keyFile, pubFile string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen --name NAME",
		Short: "Make a witness key pair (Ed25519, cosignature/v1)",
		Long: `Write the witness's private key (mode 0600) and public key, and print the
public key: give it to the operators whose logs the witness cosigns, and to
their auditors. NAME identifies the witness, for example witness.example.com/w1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return withHint(errors.New("no witness name"), "pass --name witness.example.com/w1")
			}
			if !force {
				for _, f := range []string{keyFile, pubFile} {
					if _, err := os.Stat(f); err == nil {
						return withHint(fmt.Errorf("%s exists", f), "pass --force to replace it, or --key and --pub for other files")
					}
				}
			}
			skey, vkey, err := record.GenerateWitnessKey(name)
			if err != nil {
				return err
			}
			if err := writeWitnessKey(keyFile, pubFile, skey, vkey); err != nil {
				return err
			}
			inert.Fprintln(cmd.OutOrStdout(), vkey)
			inert.Fprintf(cmd.ErrOrStderr(), "private key in %s (keep it secret), public key in %s\n", keyFile, pubFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the witness's name, e.g. witness.example.com/w1")
	cmd.Flags().StringVar(&keyFile, "key", "witness.key", "file for the private key")
	cmd.Flags().StringVar(&pubFile, "pub", "witness.pub", "file for the public key")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing key files")
	return cmd
}

func witnessServeCmd() *cobra.Command {
	var listen, keyFile, stateDir, logsFile, logFormat, logLevel string
	var logs []string
	cmd := &cobra.Command{
		Use:   "serve --key FILE --state DIR --log ORIGIN=VKEY ...",
		Short: "Serve POST /add-checkpoint for the logs given",
		Long: `Serve C2SP tlog-witness add-checkpoint for each log given with --log
(ORIGIN=VKEY, or just the log's VKEY when its key name is the origin, as for
arx serve: the contents of DATA_DIR/log.pub) or listed one a line in
--logs FILE. The latest cosigned checkpoint of each log is kept in the state
directory, written durably before the witness answers.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return withHint(err, "make a key with arx witness keygen --name NAME")
			}
			signer, err := record.NewCosigner(strings.TrimSpace(string(b)))
			if err != nil {
				return err
			}
			if logsFile != "" {
				more, err := readLines(logsFile)
				if err != nil {
					return err
				}
				logs = append(logs, more...)
			}
			if len(logs) == 0 {
				return withHint(errors.New("no logs to witness"), "pass --log ORIGIN=VKEY (the log's public key, DATA_DIR/log.pub of arx serve)")
			}
			cfg := witness.Config{Signer: signer, StateDir: stateDir, Logger: log}
			byOrigin := map[string]int{}
			for _, l := range logs {
				origin, vkey, err := parseLogArg(l)
				if err != nil {
					return err
				}
				v, err := note.NewVerifier(vkey)
				if err != nil {
					return fmt.Errorf("log key %q: %w", vkey, err)
				}
				if i, ok := byOrigin[origin]; ok {
					cfg.Logs[i].Keys = append(cfg.Logs[i].Keys, v)
					continue
				}
				byOrigin[origin] = len(cfg.Logs)
				cfg.Logs = append(cfg.Logs, witness.Log{Origin: origin, Keys: []note.Verifier{v}})
			}
			w, err := witness.New(cfg)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return withHint(err, "another process uses that address: pass --listen 127.0.0.1:0 for a free port")
			}
			srv := w.Server(listen)
			inert.Fprintf(cmd.OutOrStdout(), "arx witness: %s listening on http://%s for %d log(s)\n", w.Name(), ln.Addr(), len(cfg.Logs))
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(stop)
			select {
			case sig := <-stop:
				log.Info("shutting down", "signal", sig.String())
			case err := <-errc:
				if !errors.Is(err, http.ErrServerClosed) {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return srv.Shutdown(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", envDefault("ARX_WITNESS_LISTEN", "127.0.0.1:7380"), "address to listen on (env ARX_WITNESS_LISTEN)")
	f.StringVar(&keyFile, "key", "witness.key", "the witness's private key (arx witness keygen)")
	f.StringVar(&stateDir, "state", "witness-state", "directory for the latest cosigned checkpoint of each log")
	f.StringArrayVar(&logs, "log", nil, "a log to witness: ORIGIN=VKEY, or VKEY when the key's name is the origin; repeatable")
	f.StringVar(&logsFile, "logs", "", "file listing logs to witness, one ORIGIN=VKEY (or VKEY) a line, # comments")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

// writeWitnessKey writes a witness's private key (mode 0600) and public key.
func writeWitnessKey(keyFile, pubFile, skey, vkey string) error {
	if err := os.WriteFile(keyFile, []byte(skey+"\n"), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubFile, []byte(vkey+"\n"), 0o644)
}

// parseLogArg splits ORIGIN=VKEY; a bare VKEY's origin is its key name. A
// VKEY may end in base64 padding, so the origin is what precedes the first
// "=" only when that prefix has no "+".
func parseLogArg(s string) (origin, vkey string, err error) {
	s = strings.TrimSpace(s)
	if o, k, ok := strings.Cut(s, "="); ok && o != "" && !strings.Contains(o, "+") {
		origin, vkey = o, k
	} else {
		vkey = s
	}
	if b, rerr := os.ReadFile(vkey); rerr == nil {
		vkey = strings.TrimSpace(string(b))
	}
	if origin == "" {
		origin, _, _ = strings.Cut(vkey, "+")
	}
	if origin == "" || !strings.Contains(vkey, "+") {
		return "", "", fmt.Errorf("--log %q is not ORIGIN=VKEY", s)
	}
	return origin, vkey, nil
}

// readLines reads non-empty, non-comment lines.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}
