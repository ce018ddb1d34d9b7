package agentrun

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	parent := []string{"PATH=/usr/bin", "HOME=/home/op", "LANG=fr_FR.UTF-8", "LC_TIME=C", "TZ=Europe/Paris", "TERM=xterm",
		"AWS_SECRET_ACCESS_KEY=aws", "PGPASSWORD=pg", "CRM_KEY=crm", "ARX_ADMIN_TOKEN=arxk_op", "ARX_TOKEN=arxa_other",
		"ARX_BASE_URL=http://elsewhere/v1", "HTTPS_PROXY=http://proxy:3128", "PATH=/usr/local/bin:/usr/bin", "NOEQUALS"}
	arx := map[string]string{"ARX_AGENT_ID": "a1", "ARX_BASE_URL": "http://127.0.0.1:8080/v1", "ARX_TOKEN": "arxa_mine"}
	for _, tc := range []struct {
		name    string
		extra   []string
		want    []string
		wantErr string
	}{
		{name: "only what an agent needs", want: []string{"HOME=/home/op", "LANG=fr_FR.UTF-8", "LC_TIME=C", "TZ=Europe/Paris",
			"TERM=xterm", "PATH=/usr/local/bin:/usr/bin", "ARX_AGENT_ID=a1", "ARX_BASE_URL=http://127.0.0.1:8080/v1", "ARX_TOKEN=arxa_mine"}},
		{name: "what --env names", extra: []string{"HTTPS_PROXY"}, want: []string{"HOME=/home/op", "LANG=fr_FR.UTF-8", "LC_TIME=C",
			"TZ=Europe/Paris", "TERM=xterm", "HTTPS_PROXY=http://proxy:3128", "PATH=/usr/local/bin:/usr/bin", "ARX_AGENT_ID=a1",
			"ARX_BASE_URL=http://127.0.0.1:8080/v1", "ARX_TOKEN=arxa_mine"}},
		{name: "never the operator's token", extra: []string{"ARX_ADMIN_TOKEN"}, wantErr: "never the operator's"},
		{name: "ARX_ variables are arx run's", extra: []string{"ARX_TOKEN"}, wantErr: "sets the agent's ARX_ variables"},
		{name: "a name that is not set", extra: []string{"NOPE"}, wantErr: "not set here"},
		{name: "not a name", extra: []string{"A=B"}, wantErr: "not a variable name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Env(parent, tc.extra, arx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Env = %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("Env =\n%q, %v\nwant\n%q", got, err, tc.want)
			}
		})
	}
}

// TestRunGivesTheEnvironment: the process sees exactly the environment it
// was given.
func TestRunGivesTheEnvironment(t *testing.T) {
	var out bytes.Buffer
	env := []string{"PATH=" + os.Getenv("PATH"), "ARX_TOKEN=arxa_mine"}
	res, err := Run(t.Context(), Config{Path: "/usr/bin/env", Env: env, Stdout: &out})
	if err != nil || res.Exit != 0 || res.Stopped {
		t.Fatalf("Run: %+v, %v", res, err)
	}
	if got := strings.Fields(out.String()); !slices.Equal(got, env) {
		t.Errorf("the process saw %q, want %q", got, env)
	}
}

// TestRunStopsTheGroupOnTermination: once the agent is terminated, its
// whole process group goes: SIGTERM first, SIGKILL after the grace period
// for a process that ignores SIGTERM, and a child it started too.
func TestRunStopsTheGroupOnTermination(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		want   syscall.Signal
	}{
		{"one that stops on SIGTERM", "sleep 60 & echo $! > %s; wait", syscall.SIGTERM},
		{"one that ignores SIGTERM", "trap '' TERM; sleep 60 & echo $! > %s; wait; wait", syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "child.pid")
			var terminated atomic.Bool
			done := make(chan struct{})
			var res Result
			var err error
			go func() {
				defer close(done)
				res, err = Run(t.Context(), Config{Path: "/bin/sh", Args: []string{"-c", strings.Replace(tc.script, "%s", pidFile, 1)},
					Env: []string{"PATH=" + os.Getenv("PATH")}, Poll: 20 * time.Millisecond, Grace: 300 * time.Millisecond,
					Terminated: func(context.Context) (bool, error) { return terminated.Load(), nil }})
			}()
			var child int
			for deadline := time.Now().Add(5 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				b, _ := os.ReadFile(pidFile)
				child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
			if child == 0 {
				t.Fatal("the process did not start its child")
			}
			terminated.Store(true)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after the termination")
			}
			if err != nil || !res.Stopped || res.Signal != tc.want {
				t.Errorf("Run = %+v, %v; want stopped with %v", res, err, tc.want)
			}
			// The child went with the group (it may linger as a zombie of
			// init for a moment).
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if err := syscall.Kill(child, 0); err != nil {
					break
				}
				if b, _ := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); bytes.Contains(b, []byte(") Z ")) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the child %d outlived the termination", child)
				}
			}
		})
	}
}

func TestReadable(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	closed := filepath.Join(dir, "closed")
	os.WriteFile(open, []byte("x"), 0o600)
	os.WriteFile(closed, []byte("x"), 0o000)
	got := Readable(open, closed, filepath.Join(dir, "missing"))
	want := []string{open}
	if os.Geteuid() == 0 {
		want = append(want, closed) // root reads everything
	}
	if !slices.Equal(got, want) {
		t.Errorf("Readable = %q, want %q", got, want)
	}
}
