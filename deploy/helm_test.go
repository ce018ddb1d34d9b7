package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arxsec/arx/internal/arxtest"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

const chart = "helm/arx"

// helm finds the helm binary: ARX_TEST_HELM (.ci/setup-helm.sh builds it
// from the Go module proxy), or helm on PATH.
func helm(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ARX_TEST_HELM"); p != "" {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "" {
		t.Fatal("no helm (ARX_TEST_HELM or PATH), and ARX_TEST_REQUIRE_SERVERS is set: source .ci/setup-helm.sh")
	}
	t.Skip("no helm: the chart's tests need it (source .ci/setup-helm.sh builds it, or put helm on PATH)")
	return ""
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out.String(), nil
}

// rendered is what helm template made, decoded strictly into the
// Kubernetes API's own types: an unknown field, a wrong type or a kind
// the chart should not make fails the test.
type rendered struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	configMaps []*corev1.ConfigMap
	pvcs       []*corev1.PersistentVolumeClaim
	ingresses  []*networkingv1.Ingress
	pdbs       []*policyv1.PodDisruptionBudget
	accounts   []*corev1.ServiceAccount
}

// add appends a new object to list and returns it, to decode into.
func add[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

func decode(t *testing.T, manifests string) rendered {
	t.Helper()
	var r rendered
	dec := yaml.NewDecoder(strings.NewReader(manifests))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered YAML: %v", err)
		}
		if doc == nil {
			continue
		}
		js, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		kind := fmt.Sprint(doc["apiVersion"], " ", doc["kind"])
		var obj any
		switch kind {
		case "apps/v1 Deployment":
			if r.deployment != nil {
				t.Fatal("two Deployments")
			}
			r.deployment = new(appsv1.Deployment)
			obj = r.deployment
		case "v1 Service":
			r.service = new(corev1.Service)
			obj = r.service
		case "v1 ConfigMap":
			obj = add(&r.configMaps)
		case "v1 PersistentVolumeClaim":
			obj = add(&r.pvcs)
		case "networking.k8s.io/v1 Ingress":
			obj = add(&r.ingresses)
		case "policy/v1 PodDisruptionBudget":
			obj = add(&r.pdbs)
		case "v1 ServiceAccount":
			obj = add(&r.accounts)
		default:
			t.Fatalf("the chart made a %s", kind)
		}
		d := json.NewDecoder(bytes.NewReader(js))
		d.DisallowUnknownFields()
		if err := d.Decode(obj); err != nil {
			t.Fatalf("%s does not match the Kubernetes API: %v\n%s", kind, err, js)
		}
		name, _ := doc["metadata"].(map[string]any)["name"].(string)
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("%s name %q: %v", kind, name, errs)
		}
	}
	if r.deployment == nil || r.service == nil {
		t.Fatal("no Deployment or Service")
	}
	return r
}

// serveFlags are the flags arx serve takes, from its own help.
func serveFlags(t *testing.T, arx string) map[string]bool {
	t.Helper()
	out, err := exec.Command(arx, "serve", "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["key-dir"] || !flags["listen"] {
		t.Fatalf("arx serve --help names no --key-dir or --listen:\n%s", out)
	}
	return flags
}

func TestMain(m *testing.M) {
	code := m.Run()
	arxtest.RemoveBinary()
	os.Exit(code)
}

// TestChart lints the chart and renders it with each values file in
// helm/arx/ci: every object decodes into the Kubernetes API's types, the pod
// runs hardened, every flag is one arx serve has, every file a flag names is
// mounted from the secret key it needs, and no secret is in the pod spec.
func TestChart(t *testing.T) {
	helm(t)
	arx := arxtest.Binary(t)
	flags := serveFlags(t, arx)
	files, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("values files in %s/ci: %v %v", chart, files, err)
	}
	for _, values := range files {
		t.Run(filepath.Base(values), func(t *testing.T) {
			if _, err := runHelm(t, "lint", "--strict", chart, "-f", values); err != nil {
				t.Fatal(err)
			}
			out, err := runHelm(t, "template", "arx", chart, "-f", values, "--namespace", "arx")
			if err != nil {
				t.Fatal(err)
			}
			r := decode(t, out)
			checkPod(t, r, flags)
		})
	}
}

func checkPod(t *testing.T, r rendered, flags map[string]bool) {
	d := r.deployment
	pod := d.Spec.Template.Spec
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the selector's %s=%s is not on the pods", k, v)
		}
	}
	for k, v := range r.service.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the Service selects %s=%s, not on the pods", k, v)
		}
	}
	sc := pod.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context: %+v", sc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a Kubernetes API token it does not use")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	csc := c.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
		t.Errorf("container security context: %+v", csc)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("no readiness probe on /readyz")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
		if s := v.Secret; s != nil && (s.DefaultMode == nil || *s.DefaultMode&0o007 != 0) {
			t.Errorf("secret volume %s is readable by every account in the pod", v.Name)
		}
	}
	mounts := map[string]corev1.Volume{} // mount path -> volume
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("mount %s names no volume", m.Name)
		}
		mounts[m.MountPath] = v
	}
	if _, ok := mounts["/var/lib/arx"]; !ok {
		t.Error("the data directory is not a volume: a read-only root has nowhere to write")
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %q", c.Args)
	}
	secretish := regexp.MustCompile(`postgres(ql)?://|xox[bp]-|hooks\.slack\.com|AKIA[0-9A-Z]{12}|arxk_`)
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !flags[name] {
			t.Errorf("arg %q: arx serve has no such flag", a)
		}
		if secretish.MatchString(a) {
			t.Errorf("arg %q carries a secret: the pod spec is readable by anyone who may list pods", a)
		}
		// A file a flag names is on a mounted volume that holds it.
		if strings.HasSuffix(name, "-file") || name == "connectors" || name == "key-dir" {
			dir, file := filepath.Dir(value), filepath.Base(value)
			if name == "key-dir" {
				dir, file = value, ""
			}
			v, ok := mounts[dir]
			if !ok {
				t.Errorf("--%s=%s: %s is not mounted", name, value, dir)
				continue
			}
			if file == "" {
				continue
			}
			switch {
			case v.Secret != nil && len(v.Secret.Items) > 0:
				if !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == file }) {
					t.Errorf("--%s=%s: secret %s does not project %s", name, value, v.Secret.SecretName, file)
				}
			case v.ConfigMap != nil:
				found := false
				for _, cm := range r.configMaps {
					_, has := cm.Data[file]
					found = found || (cm.Name == v.ConfigMap.Name && has)
				}
				if !found {
					t.Errorf("--%s=%s: config map %s has no %s", name, value, v.ConfigMap.Name, file)
				}
			}
		}
	}
	for _, e := range c.Env {
		if e.Value != "" && secretish.MatchString(e.Value) {
			t.Errorf("env %s carries a secret in the pod spec", e.Name)
		}
	}
	multi := d.Spec.Replicas != nil && *d.Spec.Replicas > 1
	if multi != (len(r.pdbs) == 1) {
		t.Errorf("%d replicas, %d disruption budgets", *d.Spec.Replicas, len(r.pdbs))
	}
	if hasDB := slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "ARX_DATABASE" }); !hasDB {
		if multi || len(r.pvcs) != 1 || volumes["data"].PersistentVolumeClaim == nil {
			t.Error("SQLite without one replica on a persistent volume")
		}
	}
	for _, in := range r.ingresses {
		for _, rule := range in.Spec.Rules {
			if errs := validation.IsDNS1123Subdomain(rule.Host); len(errs) > 0 {
				t.Errorf("ingress host %q (Kubernetes refuses it): %v", rule.Host, errs)
			}
			for _, p := range rule.HTTP.Paths {
				if p.Backend.Service.Name != r.service.Name {
					t.Errorf("the ingress sends %s to service %s", rule.Host, p.Backend.Service.Name)
				}
			}
		}
	}
}

// TestChartRefuses: values that cannot work fail at helm template, saying
// what to set, rather than deploy a pod that crashes.
func TestChartRefuses(t *testing.T) {
	helm(t)
	sqlite := filepath.Join(chart, "ci", "sqlite-values.yaml")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"replicas on SQLite", []string{"--set", "replicaCount=3"}, "needs PostgreSQL"},
		{"no keys", []string{"--set", "keys.existingSecret="}, "existingSecret"},
		{"no public URL", []string{"--set", "publicURL=arx.example.com"}, "publicURL"},
		{"passwords off without SSO", []string{"--set", "sso.localPasswords=false"}, "needs sso.issuer"},
		{"SSO without its secret", []string{"--set", "sso.issuer=https://idp.example.com", "--set", "sso.clientID=x"}, "sso.existingSecret"},
		{"a secret in the values", []string{"--set", "database.url=postgres://arx:pw@db/arx"}, "additional properties"},
		{"an unknown value", []string{"--set", "replicas=2"}, "additional properties"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runHelm(t, append([]string{"template", "arx", chart, "-f", sqlite}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template %v: %v; want an error naming %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestChartPodStarts runs arx with the args and environment the chart
// renders for the SQLite install, its files where the pod would have them
// (under a temporary root), the key secret mounted as Kubernetes does with
// fsGroup (another account's, group-readable for the process's group,
// 0440): the pod's command starts and serves.
func TestChartPodStarts(t *testing.T) {
	helm(t)
	arx := arxtest.Binary(t)
	out, err := runHelm(t, "template", "arx", chart, "-f", filepath.Join(chart, "ci", "sqlite-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c := decode(t, out).deployment.Spec.Template.Spec.Containers[0]
	root := t.TempDir()
	keys := filepath.Join(root, "etc/arx/keys")
	if out, err := exec.Command(arx, "keys", "init", keys, "--origin", "example.com/arx").CombinedOutput(); err != nil {
		t.Fatalf("keys init: %v\n%s", err, out)
	}
	// As kubelet mounts a secret for the pod's fsGroup: owned by root
	// (here, by root, another account), group the process's, 0440.
	entries, _ := os.ReadDir(keys)
	for _, e := range entries {
		p := filepath.Join(keys, e.Name())
		if err := os.Chmod(p, 0o440); err != nil {
			t.Fatal(err)
		}
		owner := 0
		if os.Geteuid() == 0 {
			owner = 65534
		} else if os.Getenv("ARX_TEST_REQUIRE_SERVERS") != "" {
			t.Fatal("mounting the key secret as kubelet does needs root (chown), and ARX_TEST_REQUIRE_SERVERS is set")
		} else {
			t.Skip("mounting the key secret as kubelet does (owned by root, group-readable) needs root")
		}
		if err := os.Chown(p, owner, os.Getegid()); err != nil {
			t.Fatal(err)
		}
	}
	var args []string
	for _, a := range c.Args {
		a = strings.ReplaceAll(a, "=/", "="+root+"/")
		if strings.HasPrefix(a, "--listen=") {
			a = "--listen=127.0.0.1:0"
		}
		args = append(args, a)
	}
	url, log := serve(t, exec.Command(arx, args...), []string{"HOME=" + root}, c.ReadinessProbe.HTTPGet.Path)
	token, err := os.ReadFile(filepath.Join(keys, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", url+"/v1/agents", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the key secret's admin token: %s", resp.Status)
	}
	if strings.Contains(log.String(), string(token[:20])) {
		t.Error("the admin token is in the log")
	}
}

// serve starts arx serve (cmd, with env; it must log as JSON and listen on
// port 0), stops it when the test ends, and returns its URL once ready
// answers 200, with its log.
func serve(t *testing.T, cmd *exec.Cmd, env []string, ready string) (string, *arxtest.ServeLog) {
	t.Helper()
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	log := arxtest.WatchServe(stderr)
	var url string
	select {
	case url = <-log.URL():
	case <-time.After(30 * time.Second):
		t.Fatalf("arx did not serve within 30s:\n%s", log.String())
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get(url + ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url, log
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within 30s: %v\n%s", url+ready, err, log.String())
		}
	}
}
