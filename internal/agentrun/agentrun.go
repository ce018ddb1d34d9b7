// Package agentrun starts an agent's process for `arx run`: with a token
// of its own and only the environment it needs, in a process group of its
// own, and stops that group when the agent is terminated.
//
// The rules are pure (Env, inside: the variables a process gets); the
// effects (Run: start, watch, stop) follow them.
package agentrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Inherited are the variables an agent's process gets from the operator's
// environment without asking: where programs are, the home directory, the
// locale, the time zone and the terminal. Everything else (connector
// secrets, database passwords, cloud keys, the operator's ARX token) stays
// out unless named with --env.
var Inherited = []string{"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TERM"}

// forbidden are the variables --env may not pass: the operator's
// credentials for ARX. An agent acts with its own token only.
var forbidden = map[string]bool{"ARX_ADMIN_TOKEN": true}

// Env is the environment of an agent's process: from parent, the
// Inherited variables, the locale's LC_* and the names in extra; then the
// agent's own (arx: ARX_AGENT_ID, ARX_BASE_URL, ARX_TOKEN), which win over
// anything of the same name. A name in extra that parent lacks is an
// error, as is one that may not be passed.
func Env(parent []string, extra []string, arx map[string]string) ([]string, error) {
	want := map[string]bool{}
	for _, n := range Inherited {
		want[n] = true
	}
	for _, n := range extra {
		switch {
		case n == "" || strings.ContainsAny(n, "=\x00"):
			return nil, fmt.Errorf("--env %q is not a variable name", n)
		case forbidden[n]:
			return nil, fmt.Errorf("--env %s: the agent acts with its own token, never the operator's", n)
		case strings.HasPrefix(n, "ARX_"):
			return nil, fmt.Errorf("--env %s: arx run sets the agent's ARX_ variables itself", n)
		}
		want[n] = true
	}
	found := map[string]bool{}
	var out []string
	for _, kv := range parent {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !(want[name] || strings.HasPrefix(name, "LC_")) || arx[name] != "" {
			continue
		}
		if found[name] { // the last value wins, as in exec
			out = removeName(out, name)
		}
		found[name] = true
		out = append(out, kv)
	}
	for _, n := range extra {
		if !found[n] {
			return nil, fmt.Errorf("--env %s: it is not set here", n)
		}
	}
	for _, n := range []string{"ARX_AGENT_ID", "ARX_BASE_URL", "ARX_TOKEN"} {
		if v := arx[n]; v != "" {
			out = append(out, n+"="+v)
		}
	}
	return out, nil
}

func removeName(env []string, name string) []string {
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Config is one run of an agent's process.
type Config struct {
	Path   string
	Args   []string
	Env    []string // from Env
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Terminated says whether the agent has been terminated; Run asks
	// every Poll while the process runs. An error is reported to Warn and
	// the process left running.
	Terminated func(ctx context.Context) (bool, error)
	Poll       time.Duration // default 1s
	// Grace is how long the process group has after SIGTERM before
	// SIGKILL (default 10s).
	Grace time.Duration
	Warn  func(format string, args ...any)
}

// Result is how a run ended.
type Result struct {
	// Stopped is set when Run stopped the process group because the agent
	// was terminated: with Signal, the last signal sent (SIGTERM, or
	// SIGKILL after the grace period).
	Stopped bool
	Signal  syscall.Signal
	Pid     int
	Took    time.Duration // from the termination seen to the process gone
	Exit    int           // the process's exit status (-1 when killed by a signal)
}

// Run starts the process in a process group of its own, forwards SIGINT
// and SIGTERM to the group, and, once Terminated says so, stops the group:
// SIGTERM, then SIGKILL after Grace. It returns when the process has
// exited.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.Warn == nil {
		cfg.Warn = func(string, ...any) {}
	}
	cmd := exec.Command(cfg.Path, cfg.Args...)
	cmd.Env = cfg.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.Stdin, cfg.Stdout, cfg.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return Result{}, err
	}
	res := Result{Pid: cmd.Process.Pid}
	group := func(s syscall.Signal) { syscall.Kill(-res.Pid, s) }
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	poll := time.NewTicker(cfg.Poll)
	defer poll.Stop()
	var kill <-chan time.Time
	var stopping time.Time
	for {
		select {
		case err := <-exited:
			if res.Stopped {
				res.Took = time.Since(stopping)
				// What the process left in its group goes with it.
				group(syscall.SIGKILL)
			}
			res.Exit = cmd.ProcessState.ExitCode()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = nil
			}
			return res, err
		case s := <-sigs:
			group(s.(syscall.Signal))
		case <-kill:
			res.Signal = syscall.SIGKILL
			group(syscall.SIGKILL)
			kill = nil
		case <-poll.C:
			if res.Stopped || cfg.Terminated == nil {
				continue
			}
			done, err := cfg.Terminated(ctx)
			if err != nil {
				cfg.Warn("could not learn whether the agent was terminated: %v", err)
				continue
			}
			if done {
				res.Stopped, res.Signal, stopping = true, syscall.SIGTERM, time.Now()
				group(syscall.SIGTERM)
				kill = time.After(cfg.Grace)
			}
		}
	}
}

// Readable lists the paths of files among paths that exist and that this
// process (so the agent's, which runs as the same user) can read.
func Readable(paths ...string) []string {
	var out []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		f.Close()
		out = append(out, p)
	}
	return out
}
