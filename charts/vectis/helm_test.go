package chart_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vectis-ft/vectis/internal/testenv"
)

// The chart directory is the package directory: go test runs here.
const chartDir = "."

const (
	release   = "vx"
	namespace = "vectis-test"
	fullname  = "vx-vectis"
)

// helm runs the real helm binary, away from any cluster, and returns its
// stdout and stderr.
func helm(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return helmWithKubeconfig(t, "", args...)
}

// helmWithKubeconfig runs helm against the cluster of kubeconfig ("" = none).
func helmWithKubeconfig(t *testing.T, kubeconfig string, args ...string) (string, string, error) {
	t.Helper()
	bin := testenv.Tool(t, "helm")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	// Keep helm away from any user configuration or cluster.
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	if kubeconfig == "" {
		kubeconfig = filepath.Join(home, "no-kubeconfig")
	}
	cmd.Env = append(cmd.Env, "KUBECONFIG="+kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// object is one rendered manifest: its kind, name and raw YAML.
type object struct {
	Kind, Name, Source string
	Raw                []byte
	Map                map[string]any
}

type manifests []object

// render runs helm template with the given value files and --set flags.
func render(t *testing.T, valueFiles []string, sets ...string) manifests {
	t.Helper()
	out, stderr, err := renderRaw(t, valueFiles, sets...)
	if err != nil {
		t.Fatalf("helm template %v %v: %v\n%s", valueFiles, sets, err, stderr)
	}
	return parseManifests(t, out)
}

// renderErr runs helm template and returns its error output; it fails the
// test if rendering succeeds.
func renderErr(t *testing.T, valueFiles []string, sets ...string) string {
	t.Helper()
	_, stderr, err := renderRaw(t, valueFiles, sets...)
	if err == nil {
		t.Fatalf("helm template %v %v succeeded, want an error", valueFiles, sets)
	}
	return stderr
}

func renderRaw(t *testing.T, valueFiles []string, sets ...string) (string, string, error) {
	t.Helper()
	args := []string{"template", release, chartDir, "--namespace", namespace}
	for _, f := range valueFiles {
		args = append(args, "--values", f)
	}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return helm(t, args...)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func parseManifests(t *testing.T, out string) manifests {
	t.Helper()
	var ms manifests
	for _, doc := range docSep.Split(out, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var src string
		if m := regexp.MustCompile(`(?m)^# Source: (.+)$`).FindStringSubmatch(doc); m != nil {
			src = m[1]
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("rendered manifest %s is not YAML: %v\n%s", src, err, doc)
		}
		if m == nil {
			continue
		}
		kind, _ := m["kind"].(string)
		meta, _ := m["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		if kind == "" || name == "" {
			t.Fatalf("rendered manifest %s has no kind or name:\n%s", src, doc)
		}
		ms = append(ms, object{Kind: kind, Name: name, Source: src, Raw: []byte(doc), Map: m})
	}
	return ms
}

// find returns the object of that kind and name, or fails.
func (ms manifests) find(t *testing.T, kind, name string) object {
	t.Helper()
	for _, o := range ms {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	t.Fatalf("no %s %q rendered; have %s", kind, name, ms.list())
	return object{}
}

func (ms manifests) has(kind, name string) bool {
	for _, o := range ms {
		if o.Kind == kind && (name == "" || o.Name == name) {
			return true
		}
	}
	return false
}

func (ms manifests) ofKind(kind string) []object {
	var out []object
	for _, o := range ms {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (ms manifests) list() string {
	var s []string
	for _, o := range ms {
		s = append(s, o.Kind+"/"+o.Name)
	}
	return strings.Join(s, ", ")
}

// decode decodes the object strictly into a typed Kubernetes struct: a field
// the API does not know (a typo in a template) is an error.
func decode(t *testing.T, o object, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.Raw, into); err != nil {
		t.Fatalf("%s %s (%s) does not decode strictly: %v", o.Kind, o.Name, o.Source, err)
	}
}

// Profiles are the values files the chart ships.
var profiles = map[string][]string{
	"default":    nil,
	"production": {"values-production.yaml"},
	"dev":        {"values-dev.yaml"},
	"e2e":        {"ci/e2e-values.yaml"},
}

func repoFile(t *testing.T, rel string) string {
	t.Helper()
	root, ok := testenv.RepoRoot()
	if !ok {
		t.Fatal("repository root not found")
	}
	return filepath.Join(root, rel)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyChart copies the chart (without the Go tests) to a scratch directory.
func copyChart(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "vectis")
	err := filepath.WalkDir(chartDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, path)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy chart: %v", err)
	}
	return dst
}

// TestPackage: the packaged chart leaves the Go tests out and keeps the
// files the templates read (the dashboard and the rules).
func TestPackage(t *testing.T) {
	dir := t.TempDir()
	if out, stderr, err := helm(t, "package", chartDir, "--destination", dir); err != nil {
		t.Fatalf("helm package: %v\n%s%s", err, out, stderr)
	}
	tgz, err := filepath.Glob(filepath.Join(dir, "vectis-*.tgz"))
	if err != nil || len(tgz) != 1 {
		t.Fatalf("packaged chart: %v %v", tgz, err)
	}
	names := tarNames(t, tgz[0])
	for _, n := range names {
		if strings.HasSuffix(n, ".go") {
			t.Errorf("the package contains %s", n)
		}
	}
	for _, want := range []string{"vectis/files/vectis-dashboard.json", "vectis/files/vectis-rules.yaml", "vectis/values.schema.json"} {
		if !slices.Contains(names, want) {
			t.Errorf("the package lacks %s", want)
		}
	}
	out, stderr, err := helm(t, "template", release, tgz[0], "--namespace", namespace,
		"--set", "metrics.grafanaDashboard.enabled=true", "--set", "metrics.prometheusRule.enabled=true")
	if err != nil {
		t.Fatalf("helm template of the package: %v\n%s", err, stderr)
	}
	ms := parseManifests(t, out)
	ms.find(t, "ConfigMap", fullname+"-dashboard")
	ms.find(t, "PrometheusRule", fullname)
}

func tarNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}
