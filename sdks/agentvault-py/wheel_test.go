package pysdk

import (
	"archive/zip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
)

// TestWheelQuickStart is the Python user's path from the SDK's README: in
// a fresh venv with neither pip nor setuptools, and nothing on PATH but the
// venv (no Go, no other arx), the platform wheel installs the SDK and the
// arx command, and the quick start runs in local-only mode, recording its
// calls, its refusal and its drift under arx-records/.
func TestWheelQuickStart(t *testing.T) {
	e := setup(t)
	if e.wheel == "" {
		t.Skipf("no wheel could be built here (%s); CI builds one", e.how)
	}
	checkWheel(t, e.wheel)

	venv := filepath.Join(t.TempDir(), "venv")
	if err := installWheel(e.buildPython, e.wheel, venv); err != nil {
		t.Fatal(err)
	}
	py, arx := filepath.Join(venv, "bin", "python"), filepath.Join(venv, "bin", "arx")
	env := []string{"PATH=" + filepath.Join(venv, "bin"), "HOME=" + t.TempDir(), "PYTHONDONTWRITEBYTECODE=1", "GORACE=atexit_sleep_ms=0"}
	if out, err := run(env, "", py, "-c", `
import importlib.util, shutil
for m in ("setuptools", "pip"):
    assert importlib.util.find_spec(m) is None, m + " is installed"
assert shutil.which("go") is None, "go is on PATH"
import agentvault.manifest as m
print(m.bundled_arx())`); err != nil || strings.TrimSpace(out) != arx {
		t.Fatalf("the venv is not what a fresh one with the wheel is, or the SDK does not find the wheel's arx: %v\n%s", err, out)
	}
	if out, err := run(env, "", arx, "--version"); err != nil || !strings.HasPrefix(out, "arx ") {
		t.Fatalf("arx --version from the wheel: %v %s", err, out)
	}

	// The agent's directory: the reference manifest and the quick start.
	d := t.TempDir()
	os.MkdirAll(filepath.Join(d, "manifests"), 0o755)
	copyFile(t, filepath.Join("..", "..", "reference-agents", "sales-research", "manifests", "job_description.yaml"), filepath.Join(d, "manifests", "job_description.yaml"))
	copyFile(t, filepath.Join("examples", "quickstart.py"), filepath.Join(d, "quickstart.py"))
	out, err := run(append(env, "ARX_LOCAL_MODE=1", "ARX_LOCAL_APPROVE=deny"), d, py, "quickstart.py")
	if err != nil {
		t.Fatalf("quickstart.py in local-only mode: %v\n%s", err, out)
	}
	for _, want := range []string{"account: {'id': '0017'", "refused: manifest.connector_not_declared", "merged (drift, recorded)"} {
		if !strings.Contains(out, want) {
			t.Errorf("quickstart.py printed no %q:\n%s", want, out)
		}
	}
	types := arxtest.LocalRecordTypes(t, filepath.Join(d, "arx-records"))
	if types["credential.issued"] < 3 || types["credential.refused"] != 1 || types["drift.detected"] != 1 {
		t.Errorf("arx-records/ holds %v, want the calls, the refusal and the drift ", types)
	}
}

// checkWheel: the wheel is tagged for this platform, and holds the SDK and
// an executable, stripped arx installed as a script.
func checkWheel(t *testing.T, path string) {
	t.Helper()
	name := filepath.Base(path)
	tag := map[string]string{"linux/amd64": "manylinux_2_17_x86_64", "linux/arm64": "manylinux_2_17_aarch64",
		"darwin/amd64": "macosx_12_0_x86_64", "darwin/arm64": "macosx_12_0_arm64"}[runtime.GOOS+"/"+runtime.GOARCH]
	if !strings.HasPrefix(name, "agentvault-") || !strings.Contains(name, "-py3-none-") || tag == "" || !strings.Contains(name, tag) {
		t.Errorf("wheel %s is not tagged py3-none-%s", name, tag)
	}
	z, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	var bin *zip.File
	var init, record bool
	for _, f := range z.File {
		switch {
		case strings.HasSuffix(f.Name, ".data/scripts/arx"):
			bin = f
		case f.Name == "agentvault/__init__.py":
			init = true
		case strings.HasSuffix(f.Name, ".dist-info/RECORD"):
			record = true
		}
	}
	if bin == nil || !init || !record {
		t.Fatalf("wheel %s lacks the SDK, its RECORD or arx", name)
	}
	if mode := bin.Mode(); mode&0o111 == 0 {
		t.Errorf("arx in the wheel has mode %v, not executable", mode)
	}
	fi, _ := os.Stat(path)
	t.Logf("%s: %d bytes (arx %d bytes uncompressed)", name, fi.Size(), bin.UncompressedSize64)
	if fi.Size() > 20<<20 {
		t.Errorf("wheel of %d bytes: is arx stripped?", fi.Size())
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
