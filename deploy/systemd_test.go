package deploy

import (
	"github.com/arxsec/arx/internal/arxtest"

	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const unitFile = "systemd/arx.service"

// unit reads the unit's settings (the last value of a repeated key last).
func unit(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q", unitFile, line)
		}
		u[k] = append(u[k], v)
	}
	return u
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "" {
			t.Fatal("no systemd-analyze, and ARX_TEST_REQUIRE_SERVERS is set: source .ci/setup-helm.sh (installs Debian's systemd)")
		}
		t.Skip("no systemd-analyze (Debian's systemd package): the unit's checks need it")
	}
	return p
}

// TestSystemdUnit: systemd-analyze verifies the unit and scores its sandbox
// (offline) at 2.0 or less ("OK"); every flag it passes is one arx serve
// has; every secret it passes arrives as a systemd credential.
func TestSystemdUnit(t *testing.T) {
	sa := systemdAnalyze(t)
	arx := arxtest.Binary(t)
	body, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the binary where ExecStart names it.
	dir := t.TempDir()
	local := filepath.Join(dir, "arx.service")
	if err := os.WriteFile(local, bytes.ReplaceAll(body, []byte("/usr/local/bin/arx"), []byte(arx)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sa, "verify", local).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", local).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v (exposure over 2.0)\n%s", err, out)
	}
	if m := regexp.MustCompile(`Overall exposure level for arx.service: ([0-9.]+)`).FindSubmatch(out); m == nil {
		t.Errorf("no exposure level:\n%s", out)
	} else {
		t.Logf("systemd-analyze security: exposure %s", m[1])
	}

	u := unit(t)
	flags := serveFlags(t, arx)
	start := strings.Fields(u["ExecStart"][0])
	if start[0] != "/usr/local/bin/arx" || start[1] != "serve" {
		t.Fatalf("ExecStart %q", start)
	}
	creds := map[string]bool{}
	for _, c := range u["LoadCredential"] {
		id, _, _ := strings.Cut(c, ":")
		creds[id] = true
	}
	for _, name := range []string{"log.key", "log.pub", "credential.key", "admin.token"} {
		if !creds[name] {
			t.Errorf("no LoadCredential for %s: --key-dir ${CREDENTIALS_DIRECTORY} lacks it", name)
		}
	}
	for _, a := range start[2:] {
		if name, ok := strings.CutPrefix(a, "--"); ok && !flags[name] {
			t.Errorf("ExecStart passes --%s, which arx serve does not have", name)
		}
	}
	for _, want := range []string{"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "UMask=0077"} {
		k, v, _ := strings.Cut(want, "=")
		if got := u[k]; len(got) == 0 || got[len(got)-1] != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

// TestSystemdStarts runs the unit's ExecStart as systemd would: its
// Environment, STATE_DIRECTORY and CREDENTIALS_DIRECTORY (the keys copied
// mode 0400, as LoadCredential does), nothing else in the environment.
func TestSystemdStarts(t *testing.T) {
	arx := arxtest.Binary(t)
	u := unit(t)
	root := t.TempDir()
	keys, creds, state := filepath.Join(root, "keys"), filepath.Join(root, "credentials"), filepath.Join(root, "state")
	if out, err := exec.Command(arx, "keys", "init", keys, "--origin", "example.com/arx").CombinedOutput(); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	for _, d := range []string{creds, state} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range u["LoadCredential"] {
		id, path, _ := strings.Cut(c, ":")
		b, err := os.ReadFile(filepath.Join(keys, filepath.Base(path)))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(creds, id), b, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"STATE_DIRECTORY=" + state, "CREDENTIALS_DIRECTORY=" + creds}
	for _, e := range u["Environment"] {
		if strings.HasPrefix(e, "ARX_LISTEN=") {
			e = "ARX_LISTEN=127.0.0.1:0"
		}
		env = append(env, e)
	}
	args := strings.Fields(os.Expand(u["ExecStart"][0], func(k string) string {
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, k+"="); ok {
				return v
			}
		}
		t.Fatalf("ExecStart names ${%s}, which systemd does not set here", k)
		return ""
	}))
	cmd := exec.Command(arx, args[1:]...)
	cmd.Dir = state
	_, log := serve(t, cmd, env, "/readyz")
	if _, err := os.Stat(filepath.Join(state, "data", "arx.db")); err != nil {
		t.Errorf("no database in the state directory: %v", err)
	}
	token, _ := os.ReadFile(filepath.Join(keys, "admin.token"))
	if strings.Contains(log.String(), strings.TrimSpace(string(token))) {
		t.Error("the admin token is in the journal")
	}
}
