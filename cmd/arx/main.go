// Command arx is ARX in one binary: the runtime (serve), the operator CLI
// (hire, agents, run, record, manifest) and the first look (dev).
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/inert"
	"github.com/spf13/cobra"
)

// exitError carries an exit status without more output (the command has
// already said what went wrong).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: the CLI tests call it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ec errorCode
	if errors.As(err, &ec) {
		printError(stderr, ec.err)
		return ec.code
	}
	printError(stderr, err)
	return 1
}

// version is the module version arx was built from (a release tag with
// go install ...@vX, "(devel)" from a checkout), and its commit when the
// build recorded one.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v += " " + s.Value
		case "vcs.modified":
			if s.Value == "true" {
				v += " (modified)"
			}
		}
	}
	return v + " " + bi.GoVersion
}

// errorCode is an error printed as any other, with an exit code of its
// own (arx audit verify: 2 when the audit could not be completed, 1 being
// "problems found").
type errorCode struct {
	code int
	err  error
}

func (e errorCode) Error() string { return e.err.Error() }
func (e errorCode) Unwrap() error { return e.err }

// printError prints "arx: error: ..." and, when there is one, "arx: hint: ...".
func printError(w io.Writer, err error) {
	var ae *arxerr.Error
	if errors.As(err, &ae) {
		inert.Fprintf(w, "arx: error: %s (%s)\n", ae.Message, ae.Code)
		if ae.Hint != "" {
			inert.Fprintf(w, "arx: hint: %s\n", ae.Hint)
		}
		return
	}
	var he hintError
	if errors.As(err, &he) {
		inert.Fprintf(w, "arx: error: %s\narx: hint: %s\n", he.err, he.hint)
		return
	}
	// Errors of our own may span lines (errors.Join); each line is made
	// inert, and the lines after the first are indented, so no text
	// inside can pass for a line of ours.
	for i, line := range strings.Split(err.Error(), "\n") {
		if i == 0 {
			inert.Fprintf(w, "arx: error: %s\n", line)
		} else {
			inert.Fprintf(w, "       %s\n", line)
		}
	}
}

type hintError struct {
	err  error
	hint string
}

func (h hintError) Error() string { return h.err.Error() }
func (h hintError) Unwrap() error { return h.err }

func withHint(err error, hint string) error { return hintError{err: err, hint: hint} }

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "arx",
		Short:         "ARX: the runtime between AI agents and systems of record",
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		serveCmd(),
		keysCmd(),
		devCmd(),
		hireCmd(),
		agentsCmd(),
		runCmd(),
		recordCmd(),
		manifestCmd(),
		usersCmd(),
		loginCmd(),
		tokensCmd(),
		approvalsCmd(),
		terminateCmd(),
		witnessCmd(),
		auditCmd(),
		connectorsCmd(),
		mcpCmd(),
	)
	return root
}

// envDefault returns the environment variable's value, or def.
func envDefault(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// newLogger builds the process logger; libraries only ever receive it.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q is not text or json", format)
}
