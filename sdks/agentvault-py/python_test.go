// Package pysdk runs the Python SDK's tests from `go test ./...`, and checks
// that the Go and the Python SDK write local records that agree.
//
// The Python tests need python3 (3.9 or later). Without it they skip, unless
// ARX_TEST_REQUIRE_SERVERS=1 (set by CI), when they fail.
package pysdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arxsec/arx/agentvault"
	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/record"
)

var (
	setupOnce sync.Once
	env       *pythonEnv
	setupErr  error
)

// pythonEnv is a Python with the SDK installed, and an arx binary.
type pythonEnv struct {
	python    string // interpreter to run the tests with
	pythonEnv []string
	arx       string
	installed bool // installed with pip into a venv (else on PYTHONPATH)
	how       string
	// wheel is the platform wheel the SDK was installed from (its arx is
	// the one the tests run), with buildPython, which has pip; empty when
	// no wheel could be built here.
	wheel, buildPython string
}

// setup builds arx and installs the SDK once per test binary.
func setup(t *testing.T) *pythonEnv {
	t.Helper()
	setupOnce.Do(func() { env, setupErr = newPythonEnv() })
	if setupErr != nil {
		if errors.Is(setupErr, exec.ErrNotFound) && os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "1" {
			t.Skipf("python3 is not installed, so the Python SDK's tests do not run (%v); CI requires them (ARX_TEST_REQUIRE_SERVERS=1)", setupErr)
		}
		if errors.Is(setupErr, exec.ErrNotFound) {
			t.Fatalf("python3 is required for the Python SDK's tests (ARX_TEST_REQUIRE_SERVERS=1): %v", setupErr)
		}
		t.Fatal(setupErr)
	}
	return env
}

// dir is the shared temporary directory of this test binary.
var dir = sync.OnceValue(func() string {
	d, err := os.MkdirTemp("", "pysdk-")
	if err != nil {
		panic(err)
	}
	return d
})

func TestMain(m *testing.M) {
	if os.Getenv("PYSDK_GO_WORKLOAD") != "" {
		os.Exit(goWorkload())
	}
	code := m.Run()
	os.RemoveAll(dir())
	os.Exit(code)
}

func newPythonEnv() (*pythonEnv, error) {
	py, err := exec.LookPath("python3")
	if err != nil {
		return nil, err
	}
	// As a Python user installs it: the platform wheel, with arx inside.
	e, werr := wheelEnv()
	if werr == nil {
		return e, nil
	}
	if os.Getenv("ARX_TEST_REQUIRE_SERVERS") == "1" {
		return nil, fmt.Errorf("the Python SDK's tests run from the platform wheel in CI: %w", werr)
	}
	e = &pythonEnv{arx: filepath.Join(dir(), "arx")}
	// The arx binary, built like this test binary (with -race when it is)
	// so the build reuses its cache.
	args := []string{"build", "-o", e.arx}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "./cmd/arx")...)
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/arx: %v\n%s", err, out)
	}
	base := cleanEnv()
	// Install the SDK as a user would (pip install ./sdks/agentvault-py),
	// into a venv, from a copy so the build leaves nothing in the tree.
	// These machines reach no package index: pip builds with the setuptools
	// and wheel it finds (--no-build-isolation), which need a Python whose
	// site-packages have both (Debian's python3 has).
	var notes []string
	for _, cand := range []string{py, "/usr/bin/python3"} {
		if _, err := os.Stat(cand); err != nil {
			continue
		}
		venv := filepath.Join(dir(), fmt.Sprintf("venv%d", len(notes)))
		if out, err := run(base, "", cand, "-m", "venv", "--system-site-packages", venv); err != nil {
			notes = append(notes, fmt.Sprintf("%s: venv: %v %s", cand, err, out))
			continue
		}
		vpy := filepath.Join(venv, "bin", "python")
		if out, err := run(base, "", vpy, "-c", "import setuptools, wheel"); err != nil {
			notes = append(notes, fmt.Sprintf("%s: no setuptools and wheel to build with: %s", cand, lastLine(out)))
			continue
		}
		src := filepath.Join(dir(), fmt.Sprintf("src%d", len(notes)))
		if err := copySDK(".", src); err != nil {
			return nil, err
		}
		if out, err := run(base, "", vpy, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "--quiet", src); err != nil {
			notes = append(notes, fmt.Sprintf("%s: pip install: %v %s", cand, err, out))
			continue
		}
		e.python, e.installed = vpy, true
		e.pythonEnv = base
		e.how = "installed with pip into a venv of " + cand
		return e, nil
	}
	// No Python here can build the package: run it from its source.
	e.python = py
	e.pythonEnv = append(base, "PYTHONPATH="+abs("src"))
	e.how = "not installable here (" + strings.Join(notes, "; ") + "): run from src/ on PYTHONPATH"
	return e, nil
}

// wheelEnv builds this platform's wheel with scripts/python-wheels.sh and
// installs it with pip into a new venv that has neither pip nor setuptools,
// as a user's would after `pip install agentvault-…whl`.
func wheelEnv() (*pythonEnv, error) {
	var buildPy string
	for _, cand := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(cand); err == nil {
			if _, err := run(cleanEnv(), "", p, "-c", "import setuptools, wheel, pip"); err == nil {
				buildPy = p
				break
			}
		}
	}
	if buildPy == "" {
		return nil, errors.New("no python3 with setuptools, wheel and pip to build the wheel with (Debian: python3-setuptools python3-wheel python3-pip)")
	}
	dist := filepath.Join(dir(), "dist")
	env := append(cleanEnv(), "PYTHON="+buildPy)
	if out, err := run(env, "", "bash", filepath.Join("..", "..", "scripts", "python-wheels.sh"), dist, "--host"); err != nil {
		return nil, fmt.Errorf("scripts/python-wheels.sh --host: %v\n%s", err, out)
	}
	wheels, _ := filepath.Glob(filepath.Join(dist, "agentvault-*.whl"))
	if len(wheels) != 1 {
		return nil, fmt.Errorf("scripts/python-wheels.sh --host made %d wheels, want 1", len(wheels))
	}
	venv := filepath.Join(dir(), "wheel-venv")
	if err := installWheel(buildPy, wheels[0], venv); err != nil {
		return nil, err
	}
	return &pythonEnv{python: filepath.Join(venv, "bin", "python"), pythonEnv: cleanEnv(), arx: filepath.Join(venv, "bin", "arx"),
		installed: true, wheel: wheels[0], buildPython: buildPy,
		how: "installed from the platform wheel " + filepath.Base(wheels[0]) + " into a venv"}, nil
}

// installWheel makes a venv without pip (so without setuptools) from the
// interpreter that has pip, and installs the wheel into it with that pip.
func installWheel(buildPy, wheel, venv string) error {
	if out, err := run(cleanEnv(), "", buildPy, "-m", "venv", "--without-pip", venv); err != nil {
		return fmt.Errorf("venv: %v %s", err, out)
	}
	if out, err := run(cleanEnv(), "", buildPy, "-m", "pip", "--python", filepath.Join(venv, "bin", "python"),
		"install", "--no-index", "--no-deps", "--quiet", "--disable-pip-version-check", wheel); err != nil {
		return fmt.Errorf("pip install %s: %v %s", filepath.Base(wheel), err, out)
	}
	return nil
}

// cleanEnv is the environment without the ARX_ variables of whoever runs
// the tests, and without writing .pyc files into the tree.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ARX_") || strings.HasPrefix(kv, "PYTHON") {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "PYTHONDONTWRITEBYTECODE=1")
	if os.Getenv("GORACE") == "" {
		// A -race binary sleeps a second at exit by default; the tests run
		// arx (built with -race when they are) many times.
		out = append(out, "GORACE=atexit_sleep_ms=0")
	}
	return out
}

func (e *pythonEnv) environ(extra ...string) []string {
	return append(append(append([]string(nil), e.pythonEnv...), "ARX_BIN="+e.arx), extra...)
}

func run(env []string, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		panic(err)
	}
	return a
}

// copySDK copies what pip needs to build the package.
func copySDK(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"pyproject.toml", "README.md", "src"} {
		err := filepath.WalkDir(filepath.Join(from, name), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && (d.Name() == "__pycache__" || strings.HasSuffix(d.Name(), ".egg-info")) {
				return filepath.SkipDir
			}
			rel, _ := filepath.Rel(from, p)
			dst := filepath.Join(to, rel)
			if d.IsDir() {
				return os.MkdirAll(dst, 0o755)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// TestPythonSDK runs the Python SDK's own tests (stdlib unittest) against
// a real arx serve that they start.
func TestPythonSDK(t *testing.T) {
	e := setup(t)
	t.Logf("Python SDK %s", e.how)
	if e.installed {
		out, err := run(e.environ(), "", e.python, "-c", "import agentvault, sys; print(agentvault.__file__)")
		if err != nil || !strings.Contains(out, "site-packages") {
			t.Fatalf("the tests would not use the installed package: %v %s", err, out)
		}
	}
	out, err := run(e.environ(), ".", e.python, "-m", "unittest", "discover", "-s", "tests", "-v")
	if err != nil {
		t.Fatalf("python -m unittest discover: %v\n%s", err, out)
	}
	if !strings.Contains(out, "\nOK") {
		t.Fatalf("the Python tests did not report OK:\n%s", out)
	}
	t.Logf("%s", lastLines(out, 4))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// agentDir lays out an agent's directory: manifests/job_description.yaml
// (the Python tests' manifest).
func agentDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	b, err := os.ReadFile(filepath.Join("tests", "job_description.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(d, "manifests"), 0o755)
	if err := os.WriteFile(filepath.Join(d, "manifests", "job_description.yaml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *pythonEnv) pythonWorkload(ctx context.Context, d string, repeat int, tag string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.python, abs(filepath.Join("tests", "workload.py")), "--repeat", fmt.Sprint(repeat), "--tag", tag)
	cmd.Dir = d
	cmd.Env = e.environ("ARX_LOCAL_MODE=1", "ARX_LOCAL_APPROVE=allow")
	return cmd
}

func goWorkloadCmd(ctx context.Context, d string, repeat int, tag string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Dir = d
	cmd.Env = append(cleanEnv(), "PYSDK_GO_WORKLOAD=1", "ARX_LOCAL_MODE=1", "ARX_LOCAL_APPROVE=allow",
		fmt.Sprintf("PYSDK_REPEAT=%d", repeat), "PYSDK_TAG="+tag)
	return cmd
}

// goWorkload is tests/workload.py in Go: the same calls, in local-only mode.
func goWorkload() int {
	c, err := agentvault.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var repeat int
	fmt.Sscan(os.Getenv("PYSDK_REPEAT"), &repeat)
	ctx := context.Background()
	for i := range repeat {
		tag := fmt.Sprintf("%s-%d", os.Getenv("PYSDK_TAG"), i)
		do := func(a agentvault.Action, fn func() error) error {
			_, err := agentvault.Do(ctx, c, a, func(context.Context, agentvault.Credential) (struct{}, error) { return struct{}{}, fn() })
			return err
		}
		ok := func() error { return nil }
		steps := []struct {
			a    agentvault.Action
			fn   func() error
			want func(error) bool
		}{
			{agentvault.Action{Connector: "salesforce", Action: "account.read", Risk: agentvault.RiskLow, Summary: tag + " read"}, ok, isNil},
			{agentvault.Action{Connector: "hubspot", Action: "contact.read"}, ok, func(err error) bool { return agentvault.IsCode(err, arxerr.ConnectorNotDeclared) }},
			{agentvault.Action{Connector: "salesforce", Action: "account.merge", Summary: tag + " merge"}, ok, isNil},
			{agentvault.Action{Connector: "salesforce", Action: "account.delete", Risk: agentvault.RiskHigh, Summary: tag + " delete"}, ok, isNil},
			{agentvault.Action{Connector: "db", Action: "query", Summary: tag + " query"}, func() error { return errors.New("query failed") },
				func(err error) bool { return err != nil && strings.Contains(err.Error(), "query failed") }},
		}
		for _, s := range steps {
			if err := do(s.a, s.fn); !s.want(err) {
				fmt.Fprintf(os.Stderr, "%s %s: unexpected %v\n", s.a.Connector, s.a.Action, err)
				return 1
			}
		}
	}
	return 0
}

func isNil(err error) bool { return err == nil }

// shape is what an entry says, without what differs from run to run (ids,
// times, hashes, summaries, the language's wording of an error).
func shape(e *record.Entry) string {
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fixed := map[string]any{}
	for _, k := range []string{"code", "outcome", "rule", "policy", "facts", "declared_risk", "local", "mode", "approvers", "delegates"} {
		if v, ok := e.Data[k]; ok {
			fixed[k] = v
		}
	}
	b, _ := json.Marshal(fixed)
	actor := e.Actor
	if strings.HasPrefix(actor, "local:") && !strings.HasPrefix(actor, "local:local-agent") {
		actor = "local:<user>"
	}
	return fmt.Sprintf("%s %s %s %s agent=%s actor=%s call=%t keys=%v %s", e.Type, e.Connector, e.Action, e.Risk, e.Agent, actor,
		e.Call != "", keys, b)
}

func readEntries(t *testing.T, path string) []*record.Entry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*record.Entry
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		e, err := record.Parse(line)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, e)
	}
	return out
}

// TestGoAndPythonWriteTheSameRecord runs the same workload with the Go SDK
// and the Python SDK in local-only mode, alone and then both at once into
// one directory: `arx record verify` must accept every record, the two must
// record the same facts, and `arx manifest check` must say the same of both.
func TestGoAndPythonWriteTheSameRecord(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	goDir, pyDir, mixed := agentDir(t), agentDir(t), agentDir(t)
	if out, err := goWorkloadCmd(ctx, goDir, 1, "go").CombinedOutput(); err != nil {
		t.Fatalf("Go workload: %v\n%s", err, out)
	}
	if out, err := e.pythonWorkload(ctx, pyDir, 1, "py").CombinedOutput(); err != nil {
		t.Fatalf("Python workload: %v\n%s", err, out)
	}
	// Both languages, two processes each, appending to one file at once.
	var cmds []*exec.Cmd
	for i := range 2 {
		cmds = append(cmds, goWorkloadCmd(ctx, mixed, 4, fmt.Sprintf("go%d", i)), e.pythonWorkload(ctx, mixed, 4, fmt.Sprintf("py%d", i)))
	}
	outs := make([]bytes.Buffer, len(cmds))
	for i, c := range cmds {
		c.Stdout, c.Stderr = &outs[i], &outs[i]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("%s: %v\n%s", c.Path, err, outs[i].String())
		}
	}

	file := filepath.Join("arx-records", "local-agent.jsonl")
	for _, d := range []string{goDir, pyDir, mixed} {
		out, err := run(e.environ(), d, e.arx, "record", "verify", "arx-records")
		if err != nil || !strings.Contains(out, "OK: ") {
			t.Fatalf("arx record verify in %s: %v\n%s", d, err, out)
		}
	}
	goEntries, pyEntries := readEntries(t, filepath.Join(goDir, file)), readEntries(t, filepath.Join(pyDir, file))
	if len(goEntries) != 13 || len(goEntries) != len(pyEntries) {
		t.Fatalf("Go wrote %d entries, Python %d, want 13 each", len(goEntries), len(pyEntries))
	}
	for i := range goEntries {
		if g, p := shape(goEntries[i]), shape(pyEntries[i]); g != p {
			t.Errorf("entry %d differs:\n    Go: %s\nPython: %s", i, g, p)
		}
	}
	if got := len(readEntries(t, filepath.Join(mixed, file))); got != 4*4*13 {
		t.Errorf("mixed record has %d entries, want %d", got, 4*4*13)
	}

	check := func(d string) any {
		out, err := run(e.environ(), d, e.arx, "manifest", "check", "manifests/job_description.yaml", "--records", "arx-records", "--json")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("manifest check in %s: %v, want exit status 1\n%s", d, err, out)
		}
		var rep struct {
			Findings []map[string]any `json:"findings"`
			Calls    int              `json:"calls"`
			Errors   int              `json:"errors"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		for _, f := range rep.Findings {
			delete(f, "first")
		}
		return rep
	}
	if g, p := check(goDir), check(pyDir); !reflect.DeepEqual(g, p) {
		t.Errorf("manifest check differs:\n    Go: %+v\nPython: %+v", g, p)
	}
}
