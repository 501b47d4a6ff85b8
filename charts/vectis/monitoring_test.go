package chart_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/vectis-ft/vectis/internal/testenv"
	pesitserver "github.com/vectis-ft/vectis/pesit/server"
)

// catalogue is the Vectis metric catalogue of issues 7 and 8. Dashboards and
// alerts may name nothing else. Histograms also expose _bucket, _sum, _count.
var catalogue = map[string]bool{ // name -> is a histogram
	"vectis_cluster_members":                 false,
	"vectis_cluster_is_leader":               false,
	"vectis_cluster_leader_changes_total":    false,
	"vectis_cluster_failover_seconds":        true,
	"vectis_k8s_label_errors_total":          false,
	"vectis_pesit_sessions_active":           false,
	"vectis_pesit_connections_total":         false,
	"vectis_pesit_transfers_total":           false,
	"vectis_pesit_transfer_bytes_total":      false,
	"vectis_pesit_transfer_duration_seconds": true,
	"vectis_pesit_sync_points_total":         false,
	"vectis_pesit_restarts_total":            false,
	"vectis_pesit_diagnostics_total":         false,
	"vectis_pesit_logins_total":              false,
	"vectis_credential_wait_seconds":         true,
	"vectis_credential_checks_total":         false,
	"vectis_credential_derivations_active":   false,
	"vectis_pesit_peer_anomalies_total":      false,
	"vectis_store_operation_seconds":         true,
	"vectis_transfer_partial_bytes":          false,
	"vectis_transfer_expired_total":          false,
}

// The files are read through deploy/, where operators find them; they are
// the chart's own files (one source of truth).
const (
	dashboardPath = "deploy/grafana/vectis-dashboard.json"
	rulesPath     = "deploy/prometheus/vectis-rules.yaml"
)

var (
	stringLit  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	identifier = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	vectisName = regexp.MustCompile(`^vectis_[a-z0-9_]+$`)
)

// metricNames tokenizes a PromQL expression and returns the vectis_* names
// it uses (label values inside quotes are not names).
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	bare := stringLit.ReplaceAllString(expr, `""`)
	// Brackets must balance, or the expression is broken.
	depth := map[rune]int{}
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, r := range bare {
		switch r {
		case '(', '[', '{':
			depth[r]++
		case ')', ']', '}':
			depth[pairs[r]]--
			if depth[pairs[r]] < 0 {
				t.Errorf("unbalanced %c in %q", r, expr)
			}
		}
	}
	for r, d := range depth {
		if d != 0 {
			t.Errorf("unbalanced %c in %q", r, expr)
		}
	}
	var names []string
	for _, id := range identifier.FindAllString(bare, -1) {
		if strings.HasPrefix(id, "vectis_") {
			names = append(names, id)
		}
	}
	return names
}

// inCatalogue reports the catalogue metric a series name belongs to.
func inCatalogue(name string) (string, bool) {
	if !vectisName.MatchString(name) {
		return "", false
	}
	if _, ok := catalogue[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && catalogue[base] {
			return base, true
		}
	}
	return "", false
}

// dashboardExprs returns every PromQL expression of a Grafana dashboard:
// panel targets, template variable queries and annotations.
func dashboardExprs(t *testing.T, raw []byte) []string {
	t.Helper()
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboardPath, err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				if s, ok := sub.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(sub)
			}
		case []any:
			for _, sub := range v {
				walk(sub)
			}
		}
	}
	walk(dash)
	if tv, ok := dash["templating"].(map[string]any); ok {
		for _, v := range tv["list"].([]any) {
			if q, ok := v.(map[string]any)["query"].(map[string]any); ok {
				exprs = append(exprs, q["query"].(string))
			}
		}
	}
	return exprs
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func TestDashboardUsesCatalogueMetrics(t *testing.T) {
	raw := readFile(t, repoFile(t, dashboardPath))
	exprs := dashboardExprs(t, raw)
	if len(exprs) < 15 {
		t.Fatalf("found only %d expressions in the dashboard", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricNames(t, e) {
			base, ok := inCatalogue(n)
			if !ok {
				t.Errorf("dashboard expression names %s, which is not in the metric catalogue: %s", n, e)
			}
			used[base] = true
		}
	}
	// What the issue asks the dashboard to show.
	for _, m := range []string{"vectis_cluster_is_leader", "vectis_cluster_members", "vectis_cluster_leader_changes_total",
		"vectis_cluster_failover_seconds", "vectis_pesit_transfers_total", "vectis_pesit_transfer_bytes_total",
		"vectis_pesit_sessions_active", "vectis_pesit_diagnostics_total"} {
		if !used[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" {
		t.Error("the dashboard needs a stable uid so that re-imports replace it")
	}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

func TestAlertRules(t *testing.T) {
	var rf ruleFile
	if err := yaml.UnmarshalStrict(readFile(t, repoFile(t, rulesPath)), &rf); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	alerts := map[string]string{}
	fors := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v lacks alert, expr, severity or summary", r)
			}
			for _, n := range metricNames(t, r.Expr) {
				if _, ok := inCatalogue(n); !ok {
					t.Errorf("alert %s names %s, which is not in the metric catalogue", r.Alert, n)
				}
			}
			alerts[r.Alert] = r.Expr
			fors[r.Alert] = r.For
		}
	}
	ws := regexp.MustCompile(`\s+`)
	norm := func(s string) string { return ws.ReplaceAllString(strings.TrimSpace(s), " ") }
	want := []struct {
		alert, pattern, forDur string
	}{
		// No leader for more than 30 s.
		{"VectisNoLeader", `^sum( by \(namespace, job\))? \(vectis_cluster_is_leader\) < 1$`, "30s"},
		// More than one pod reporting leader.
		{"VectisMultipleLeaders", `^sum( by \(namespace, job\))? \(vectis_cluster_is_leader\) > 1$`, ""},
		// Label errors.
		{"VectisLeaderLabelErrors", `^increase\(vectis_k8s_label_errors_total\[5m\]\) > 0$`, ""},
		// Transfer failure ratio above a threshold.
		{"VectisTransferFailureRatioHigh", `vectis_pesit_transfers_total\{result!="done"\}.* / .*vectis_pesit_transfers_total\[.*> 0\.05$`, ""},
	}
	for _, w := range want {
		expr, ok := alerts[w.alert]
		if !ok {
			t.Errorf("no alert %s", w.alert)
			continue
		}
		if !regexp.MustCompile(w.pattern).MatchString(norm(expr)) {
			t.Errorf("alert %s expr %q does not match %s", w.alert, norm(expr), w.pattern)
		}
		if w.forDur != "" && fors[w.alert] != w.forDur {
			t.Errorf("alert %s for %q, want %s", w.alert, fors[w.alert], w.forDur)
		}
	}
}

// TestCatalogueMatchesTheServer: the PeSIT names in the catalogue are what
// pesit/server registers, with the labels the dashboard and alerts group by.
func TestCatalogueMatchesTheServer(t *testing.T) {
	// A Registry gathers nothing for a vector without children, so read the
	// descriptors through a recording Registerer instead.
	got := map[string][]string{}
	pesitserver.NewMetrics(&describeRecorder{got: got})
	if len(got) == 0 {
		t.Fatal("pesit/server registered no metrics")
	}
	for name := range got {
		if _, ok := catalogue[name]; !ok {
			t.Errorf("pesit/server exports %s, which the catalogue (and so the dashboard) does not know", name)
		}
	}
	for name, want := range map[string][]string{
		"vectis_pesit_transfers_total":      {"result", "direction"},
		"vectis_pesit_transfer_bytes_total": {"direction"},
		"vectis_pesit_connections_total":    {"result"},
		"vectis_pesit_diagnostics_total":    {"code"},
	} {
		for _, l := range want {
			if !slices.Contains(got[name], l) {
				t.Errorf("%s has labels %v; the dashboard groups by %q", name, got[name], l)
			}
		}
	}
}

// describeRecorder is a prometheus.Registerer that records each collector's
// metric names and variable labels.
type describeRecorder struct{ got map[string][]string }

var descRE = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (r *describeRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		var ls []string
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				ls = append(ls, l)
			}
		}
		r.got[m[1]] = ls
	}
	return nil
}

func (r *describeRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *describeRecorder) Unregister(prometheus.Collector) bool { return true }

// TestMonitoringObjects: when enabled, the chart ships the very files above,
// with the threshold and extra labels from values.
func TestMonitoringObjects(t *testing.T) {
	ms := render(t, nil, "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
		"metrics.grafanaDashboard.enabled=true", "metrics.grafanaDashboard.namespace=monitoring",
		"metrics.prometheusRule.transferFailureRatio=0.2", "metrics.prometheusRule.additionalRuleLabels.team=payments",
		"metrics.serviceMonitor.labels.release=kube-prometheus")

	// Dashboard ConfigMap: the sidecar label, and the file byte for byte in meaning.
	var cm corev1.ConfigMap
	decode(t, ms.find(t, "ConfigMap", fullname+"-dashboard"), &cm)
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" {
		t.Errorf("dashboard ConfigMap labels %v namespace %q", cm.Labels, cm.Namespace)
	}
	var shipped, file any
	if err := json.Unmarshal([]byte(cm.Data["vectis-dashboard.json"]), &shipped); err != nil {
		t.Fatalf("shipped dashboard: %v", err)
	}
	if err := json.Unmarshal(readFile(t, repoFile(t, dashboardPath)), &file); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(shipped, file) {
		t.Error("the chart's dashboard differs from " + dashboardPath)
	}

	// PrometheusRule: the rules file, threshold and labels applied.
	pr := ms.find(t, "PrometheusRule", fullname)
	if pr.Map["apiVersion"] != "monitoring.coreos.com/v1" {
		t.Errorf("PrometheusRule apiVersion %v", pr.Map["apiVersion"])
	}
	specJSON, err := json.Marshal(pr.Map["spec"])
	if err != nil {
		t.Fatal(err)
	}
	var rendered, want ruleFile
	if err := json.Unmarshal(specJSON, &rendered); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(readFile(t, repoFile(t, rulesPath)), &want); err != nil {
		t.Fatal(err)
	}
	for gi := range want.Groups {
		for ri := range want.Groups[gi].Rules {
			r := &want.Groups[gi].Rules[ri]
			if r.Alert == "VectisTransferFailureRatioHigh" {
				r.Expr = strings.TrimSuffix(strings.TrimSpace(r.Expr), "> 0.05") + "> 0.2"
			}
			r.Labels["team"] = "payments"
		}
	}
	if !reflect.DeepEqual(rendered, want) {
		got, _ := json.MarshalIndent(rendered, "", " ")
		exp, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("PrometheusRule spec differs from %s with the values applied:\n got %s\nwant %s", rulesPath, got, exp)
	}

	// ServiceMonitor: scrapes the API Service (every pod), not the PeSIT one.
	sm := ms.find(t, "ServiceMonitor", fullname).Map
	if sm["apiVersion"] != "monitoring.coreos.com/v1" {
		t.Errorf("ServiceMonitor apiVersion %v", sm["apiVersion"])
	}
	meta := sm["metadata"].(map[string]any)
	if meta["labels"].(map[string]any)["release"] != "kube-prometheus" {
		t.Errorf("ServiceMonitor labels %v", meta["labels"])
	}
	spec := sm["spec"].(map[string]any)
	sel := labels.Set{}
	for k, v := range spec["selector"].(map[string]any)["matchLabels"].(map[string]any) {
		sel[k] = v.(string)
	}
	var api, pesit, headless corev1.Service
	decode(t, ms.find(t, "Service", fullname+"-api"), &api)
	decode(t, ms.find(t, "Service", fullname+"-pesit"), &pesit)
	decode(t, ms.find(t, "Service", fullname+"-headless"), &headless)
	selector := labels.SelectorFromSet(sel)
	if !selector.Matches(labels.Set(api.Labels)) || selector.Matches(labels.Set(pesit.Labels)) || selector.Matches(labels.Set(headless.Labels)) {
		t.Errorf("ServiceMonitor selector %v must pick the API Service only", sel)
	}
	eps := spec["endpoints"].([]any)
	ep := eps[0].(map[string]any)
	if len(eps) != 1 || ep["port"] != api.Spec.Ports[0].Name || ep["path"] != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %v, want port %s path /metrics", eps, api.Spec.Ports[0].Name)
	}
}

// TestPromtool runs the Prometheus rule engine on the rules: syntax of the
// file and of the chart's PrometheusRule, the unit tests of
// deploy/prometheus/vectis-rules_test.yaml (alerts fire and stay quiet on
// synthetic series), and the dashboard's queries through the PromQL parser.
func TestPromtool(t *testing.T) {
	promtool := testenv.Tool(t, "promtool")
	run := func(args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("check", "rules", repoFile(t, rulesPath))
	run("test", "rules", repoFile(t, "deploy/prometheus/vectis-rules_test.yaml"))

	// The chart's version, with another threshold and extra labels.
	ms := render(t, nil, "metrics.prometheusRule.enabled=true", "metrics.prometheusRule.transferFailureRatio=0.2",
		"metrics.prometheusRule.additionalRuleLabels.team=payments")
	spec, err := yaml.Marshal(ms.find(t, "PrometheusRule", fullname).Map["spec"])
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rendered := filepath.Join(dir, "rendered-rules.yaml")
	writeFile(t, rendered, string(spec))
	run("check", "rules", rendered)

	// Dashboard queries as recording rules, Grafana variables filled in.
	vars := strings.NewReplacer("$namespace", ".*", "$__rate_interval", "1m", "${datasource}", "prometheus")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range dashboardExprs(t, readFile(t, repoFile(t, dashboardPath))) {
		// label_values(<selector>, <label>) is Grafana's, not PromQL: parse the selector.
		if m := regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_]+\)$`).FindStringSubmatch(e); m != nil {
			e = m[1]
		}
		q, err := json.Marshal(vars.Replace(e))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
	}
	queries := filepath.Join(dir, "dashboard-queries.yaml")
	writeFile(t, queries, b.String())
	run("check", "rules", queries)
}
