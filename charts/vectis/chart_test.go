// Package chart_test checks the Vectis Helm chart with the real helm binary:
// lint, rendering of every shipped profile, schema rejections, and the
// contract between the rendered manifests and the vectis binary (its
// configuration loader, its ports, its leader label).
package chart_test

import (
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/vectis-ft/vectis/config"
)

func TestLint(t *testing.T) {
	for name, files := range profiles {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir, "--namespace", namespace}
			for _, f := range files {
				args = append(args, "--values", f)
			}
			out, stderr, err := helm(t, args...)
			if err != nil {
				t.Fatalf("helm lint --strict %v: %v\n%s%s", files, err, out, stderr)
			}
		})
	}
}

// server holds the typed objects every profile renders.
type server struct {
	ms         manifests
	deploy     appsv1.Deployment
	container  corev1.Container
	pesit, api corev1.Service
	headless   corev1.Service
	cm         corev1.ConfigMap
}

func decodeServer(t *testing.T, ms manifests) server {
	t.Helper()
	s := server{ms: ms}
	decode(t, ms.find(t, "Deployment", fullname), &s.deploy)
	decode(t, ms.find(t, "Service", fullname+"-pesit"), &s.pesit)
	decode(t, ms.find(t, "Service", fullname+"-api"), &s.api)
	decode(t, ms.find(t, "Service", fullname+"-headless"), &s.headless)
	decode(t, ms.find(t, "ConfigMap", fullname), &s.cm)
	cs := s.deploy.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "vectis" {
		t.Fatalf("want one container named vectis, got %d", len(cs))
	}
	s.container = cs[0]
	// Every object decodes strictly, not only the ones asserted below.
	for _, o := range ms {
		var into any
		switch o.Kind {
		case "Deployment", "StatefulSet":
			into = &appsv1.StatefulSet{}
			if o.Kind == "Deployment" {
				into = &appsv1.Deployment{}
			}
		case "Service":
			into = &corev1.Service{}
		case "ConfigMap":
			into = &corev1.ConfigMap{}
		case "Secret":
			into = &corev1.Secret{}
		case "Pod":
			into = &corev1.Pod{}
		case "PersistentVolumeClaim":
			into = &corev1.PersistentVolumeClaim{}
		case "ServiceAccount":
			into = &corev1.ServiceAccount{}
		case "Role":
			into = &rbacv1.Role{}
		case "RoleBinding":
			into = &rbacv1.RoleBinding{}
		case "PodDisruptionBudget":
			into = &policyv1.PodDisruptionBudget{}
		case "ServiceMonitor", "PrometheusRule":
			continue // CRDs: checked field by field in their own test
		default:
			t.Errorf("unexpected kind %s rendered (%s)", o.Kind, o.Name)
			continue
		}
		decode(t, o, into)
	}
	return s
}

func (s server) env(t *testing.T, name string) corev1.EnvVar {
	t.Helper()
	for _, e := range s.container.Env {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("container has no env %s", name)
	return corev1.EnvVar{}
}

func (s server) port(t *testing.T, name string) int32 {
	t.Helper()
	for _, p := range s.container.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container has no port %q", name)
	return 0
}

// mountFor returns the volume mount whose path contains file.
func (s server) mountFor(t *testing.T, file string) corev1.VolumeMount {
	t.Helper()
	var best corev1.VolumeMount
	for _, m := range s.container.VolumeMounts {
		if file == m.MountPath || strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			if len(m.MountPath) > len(best.MountPath) {
				best = m
			}
		}
	}
	if best.Name == "" {
		t.Fatalf("%s is on no volume mount of the container (%v)", file, s.container.VolumeMounts)
	}
	return best
}

func (s server) volume(t *testing.T, name string) corev1.Volume {
	t.Helper()
	for _, v := range s.deploy.Spec.Template.Spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("pod has no volume %q", name)
	return corev1.Volume{}
}

// loadConfig feeds the rendered vectis.yaml to the binary's own loader, with
// the environment the pod gets. Secrets are stand-ins: the loader must not
// need to read the mounted Secret files to validate.
func (s server) loadConfig(t *testing.T) *config.Config {
	t.Helper()
	text, ok := s.cm.Data["vectis.yaml"]
	if !ok {
		t.Fatal("ConfigMap has no vectis.yaml")
	}
	assertKnownKeys(t, text)
	path := filepath.Join(t.TempDir(), "vectis.yaml")
	writeFile(t, path, text)
	environ := []string{"POD_NAME=" + fullname + "-abc", "POD_NAMESPACE=" + namespace, "POD_IP=10.1.2.3"}
	for _, e := range s.container.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			environ = append(environ, e.Name+"="+secretStandIn(e.Name))
		case e.ValueFrom == nil && !strings.HasPrefix(e.Name, "OTEL_"):
			environ = append(environ, e.Name+"="+e.Value)
		}
	}
	// A password file mounted from a Secret is read by the loader unless the
	// password is already set; the stand-in keeps the test off /etc.
	environ = append(environ, "VECTIS_CLUSTER_ETCD_PASSWORD=stand-in")
	// Likewise the users file mounted from a Secret: a stand-in with the
	// Secret's format replaces the path under /etc.
	var sets []string
	if strings.Contains(text, "usersFile:") {
		users := filepath.Join(t.TempDir(), "users.yaml")
		writeFile(t, users, "- {name: admin, passwordHash: \"$2a$10$standinstandinstandinstaOqfAmHmdB2mHuj5aSD6tC3b3uS6o2\", role: admin}\n")
		sets = append(sets, "api.usersFile="+users)
	}
	cfg, err := config.Load(config.Source{File: path, Environ: environ, Sets: sets})
	if err != nil {
		t.Fatalf("the rendered vectis.yaml does not load: %v\n%s", err, text)
	}
	if m := regexp.MustCompile(`usersFile: (\S+)`).FindStringSubmatch(text); m != nil {
		cfg.API.UsersFile = m[1] // the path the pod mounts, checked below
	}
	return cfg
}

func secretStandIn(env string) string {
	if env == "VECTIS_STORE_URL" {
		return "postgres://vectis:secret@db:5432/vectis"
	}
	return "stand-in"
}

// assertKnownKeys fails on any key of the rendered file that config.Config
// does not have: the loader ignores unknown keys, so a typo would be silent.
func assertKnownKeys(t *testing.T, text string) {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("vectis.yaml: %v", err)
	}
	root, ok := doc["vectis"].(map[string]any)
	if !ok || len(doc) != 1 {
		t.Fatalf("vectis.yaml must have the single root key vectis, got %v", doc)
	}
	checkKeys(t, "vectis", root, reflect.TypeOf(config.Config{}))
}

func checkKeys(t *testing.T, path string, v any, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch val := v.(type) {
	case map[string]any:
		if typ.Kind() != reflect.Struct {
			t.Errorf("%s: a mapping where config has %s", path, typ)
			return
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < typ.NumField(); i++ {
			if tag := typ.Field(i).Tag.Get("koanf"); tag != "" {
				fields[tag] = typ.Field(i).Type
			}
		}
		for k, sub := range val {
			ft, ok := fields[k]
			if !ok {
				t.Errorf("%s.%s: unknown configuration key (config.%s has no such field)", path, k, typ.Name())
				continue
			}
			checkKeys(t, path+"."+k, sub, ft)
		}
	case []any:
		if typ.Kind() != reflect.Slice {
			t.Errorf("%s: a list where config has %s", path, typ)
			return
		}
		for i, sub := range val {
			checkKeys(t, fmt.Sprintf("%s[%d]", path, i), sub, typ.Elem())
		}
	}
}

func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

// TestProfilesRender checks, for every shipped profile, what the issue
// promises of the server pods and their Services.
func TestProfilesRender(t *testing.T) {
	wantReplicas := map[string]int32{"default": 3, "production": 3, "dev": 1, "e2e": 3}
	for name, files := range profiles {
		t.Run(name, func(t *testing.T) {
			s := decodeServer(t, render(t, files))
			checkServer(t, s, wantReplicas[name])
		})
	}
}

func checkServer(t *testing.T, s server, wantReplicas int32) {
	t.Helper()
	d := s.deploy
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)

	if d.Spec.Replicas == nil || *d.Spec.Replicas != wantReplicas {
		t.Errorf("replicas = %v, want %d", d.Spec.Replicas, wantReplicas)
	}
	if pod.Labels["app"] != "vectis-server" {
		t.Errorf("pod label app = %q, want vectis-server", pod.Labels["app"])
	}
	for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance"} {
		if pod.Labels[k] == "" {
			t.Errorf("pod has no %s label", k)
		}
	}
	if sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels); !sel.Matches(podLabels) {
		t.Errorf("Deployment selector %v does not match its pods %v", sel, podLabels)
	}
	if _, ok := d.Spec.Selector.MatchLabels["vectis-leader"]; ok {
		t.Error("the Deployment selector must not include the leader label (it changes at run time)")
	}

	// Command and downward API.
	if got := strings.Join(s.container.Args, " "); got != "serve --config /etc/vectis/vectis.yaml" {
		t.Errorf("args = %q, want serve --config /etc/vectis/vectis.yaml", got)
	}
	for env, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"} {
		e := s.env(t, env)
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("%s must come from the downward API %s, got %+v", env, field, e)
		}
	}
	cfg := s.loadConfig(t)
	clusterEnv := s.env(t, "VECTIS_CLUSTER_ENABLED").Value
	if clusterEnv != strconv.FormatBool(cfg.Cluster.Enabled) {
		t.Errorf("VECTIS_CLUSTER_ENABLED=%q but the loaded config says %v", clusterEnv, cfg.Cluster.Enabled)
	}
	if cfg.Cluster.Enabled {
		url := s.env(t, "VECTIS_STORE_URL")
		if url.ValueFrom == nil || url.ValueFrom.SecretKeyRef == nil {
			t.Errorf("VECTIS_STORE_URL must come from a Secret, got %+v", url)
		}
		if cfg.Store.Driver != "postgres" {
			t.Errorf("store driver = %q, want postgres with the cluster enabled", cfg.Store.Driver)
		}
		if cfg.Cluster.PodName != fullname+"-abc" || cfg.Cluster.Namespace != namespace {
			t.Errorf("pod identity not taken from the downward API: %q/%q", cfg.Cluster.Namespace, cfg.Cluster.PodName)
		}
		sel, err := labels.Parse(cfg.Cluster.PodSelector)
		if err != nil {
			t.Fatalf("cluster.podSelector %q: %v", cfg.Cluster.PodSelector, err)
		}
		if !sel.Matches(podLabels) {
			t.Errorf("cluster.podSelector %q does not match the Vectis pods %v", cfg.Cluster.PodSelector, podLabels)
		}
		other := labels.Set{"app": "vectis-server", "app.kubernetes.io/instance": "another-release"}
		if sel.Matches(other) {
			t.Errorf("cluster.podSelector %q also matches another release's pods", cfg.Cluster.PodSelector)
		}
	}
	m := s.mountFor(t, "/etc/vectis/vectis.yaml")
	if m.SubPath != "vectis.yaml" || s.volume(t, m.Name).ConfigMap == nil || s.volume(t, m.Name).ConfigMap.Name != s.cm.Name {
		t.Errorf("/etc/vectis/vectis.yaml must be the ConfigMap's vectis.yaml, got mount %+v", m)
	}

	// Vectis binds 127.0.0.1 unless told otherwise (issue 16, defect 13):
	// in a pod, the Services and probes come from outside the loopback.
	if cfg.Node.BindAddress != "0.0.0.0" {
		t.Errorf("node.bindAddress = %q, want 0.0.0.0 set explicitly by the chart", cfg.Node.BindAddress)
	}
	if h, _, _ := net.SplitHostPort(cfg.API.Listen); h != "0.0.0.0" {
		t.Errorf("api.listen = %q, want every interface in a pod", cfg.API.Listen)
	}

	// Ports: the container ports are the ones the binary listens on.
	apiPort := s.port(t, "api")
	pesitPort := s.port(t, "pesit")
	if got := listenPort(t, cfg.API.Listen); got != apiPort {
		t.Errorf("api.listen port %d, container port api %d", got, apiPort)
	}
	if len(cfg.PeSIT.Servers) != 1 {
		t.Fatalf("want one PeSIT server, got %d", len(cfg.PeSIT.Servers))
	}
	srv := cfg.PeSIT.Servers[0]
	if got := listenPort(t, srv.Listen); got != pesitPort {
		t.Errorf("pesit listen port %d, container port pesit %d", got, pesitPort)
	}
	if cfg.Cluster.Enabled && cfg.Cluster.FastFailover {
		if got := listenPort(t, cfg.Cluster.LivenessListen); got != s.port(t, "liveness") {
			t.Errorf("cluster.livenessListen port %d, container port liveness %d", got, s.port(t, "liveness"))
		}
	}
	if srv.TLS.Listen != "" {
		if got := listenPort(t, srv.TLS.Listen); got != s.port(t, "pesit-tls") {
			t.Errorf("pesit TLS listen port %d, container port pesit-tls %d", got, s.port(t, "pesit-tls"))
		}
		for _, f := range []string{srv.TLS.CertFile, srv.TLS.KeyFile} {
			if v := s.volume(t, s.mountFor(t, f).Name); v.Secret == nil {
				t.Errorf("TLS file %s is not on a Secret volume", f)
			}
		}
	}
	if cfg.API.UsersFile != "" {
		if v := s.volume(t, s.mountFor(t, cfg.API.UsersFile).Name); v.Secret == nil {
			t.Errorf("users file %s is not on a Secret volume", cfg.API.UsersFile)
		}
	}
	// Received and sent files live on the data volume every pod mounts.
	dataMount := s.mountFor(t, cfg.DataDir)
	for _, f := range cfg.PeSIT.Files {
		for _, dir := range []string{f.ReceiveDir, f.SendDir} {
			if dir != "" && s.mountFor(t, dir).Name != dataMount.Name {
				t.Errorf("virtual file %s: %s is not on the shared data volume", f.ID, dir)
			}
		}
	}

	// Probes.
	for name, p := range map[string]*corev1.Probe{"liveness": s.container.LivenessProbe, "readiness": s.container.ReadinessProbe, "startup": s.container.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe missing or not HTTP", name)
			continue
		}
		want := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}[name]
		if p.HTTPGet.Path != want || p.HTTPGet.Port.String() != "api" {
			t.Errorf("%s probe = %s on %s, want %s on api", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), want)
		}
	}

	// Security.
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext not restrictive: %+v", psc)
	}
	csc := s.container.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem ||
		csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0 ||
		csc.SeccompProfile == nil || csc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container securityContext not restrictive: %+v", csc)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Errorf("terminationGracePeriodSeconds = %v, want enough to drain (>= 30)", g)
	}
	if a := pod.Spec.AutomountServiceAccountToken; cfg.Cluster.Enabled && (a == nil || !*a) {
		t.Error("the pod needs its ServiceAccount token to label itself")
	}

	// Anti-affinity: preferred, weight 100, by hostname, over these pods.
	if wantReplicas > 1 {
		aff := pod.Spec.Affinity
		if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
			t.Fatalf("want one preferred pod anti-affinity term, got %+v", aff)
		}
		term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0]
		if term.Weight != 100 || term.PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("anti-affinity weight %d topology %q, want 100 kubernetes.io/hostname", term.Weight, term.PodAffinityTerm.TopologyKey)
		}
		if sel := labels.SelectorFromSet(term.PodAffinityTerm.LabelSelector.MatchLabels); !sel.Matches(podLabels) {
			t.Errorf("anti-affinity selector %v does not match the pods", sel)
		}
	}

	// The PeSIT Service selects the leader only; the API Service every pod.
	leaderKey := cfg.Cluster.LabelKey
	if cfg.Cluster.Enabled {
		if s.pesit.Spec.Selector["app"] != "vectis-server" || s.pesit.Spec.Selector[leaderKey] != "true" {
			t.Errorf("PeSIT Service selector %v, want app=vectis-server and %s=true", s.pesit.Spec.Selector, leaderKey)
		}
		leader := labels.Merge(podLabels, labels.Set{leaderKey: "true"})
		pesitSel := labels.SelectorFromSet(s.pesit.Spec.Selector)
		if !pesitSel.Matches(leader) || pesitSel.Matches(podLabels) {
			t.Errorf("PeSIT Service selector %v must match the labelled leader and no standby", pesitSel)
		}
	}
	if _, ok := s.api.Spec.Selector[leaderKey]; ok || !labels.SelectorFromSet(s.api.Spec.Selector).Matches(podLabels) {
		t.Errorf("API Service selector %v must select every Vectis pod", s.api.Spec.Selector)
	}
	checkServicePort(t, s.pesit, "pesit", "pesit")
	if srv.TLS.Listen != "" {
		checkServicePort(t, s.pesit, "pesit-tls", "pesit-tls")
	}
	checkServicePort(t, s.api, "http", "api")
	if s.headless.Spec.ClusterIP != "None" || !labels.SelectorFromSet(s.headless.Spec.Selector).Matches(podLabels) {
		t.Errorf("headless Service: clusterIP %q selector %v", s.headless.Spec.ClusterIP, s.headless.Spec.Selector)
	}

	// RBAC: exactly get, list, patch, watch on pods and list, watch on
	// endpointslices, bound to the pod's account; the labeller reads the
	// slices of the PeSIT Service.
	if cfg.Cluster.Enabled {
		var role rbacv1.Role
		decode(t, s.ms.find(t, "Role", fullname), &role)
		if len(role.Rules) != 2 {
			t.Fatalf("Role has %d rules, want 2", len(role.Rules))
		}
		for i, want := range []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		} {
			r := role.Rules[i]
			verbs := slices.Clone(r.Verbs)
			slices.Sort(verbs)
			if !slices.Equal(r.APIGroups, want.APIGroups) || !slices.Equal(r.Resources, want.Resources) ||
				!slices.Equal(verbs, want.Verbs) || len(r.ResourceNames) != 0 {
				t.Errorf("Role rule %d = %+v, want exactly %v on %v %v", i, r, want.Verbs, want.APIGroups, want.Resources)
			}
		}
		if got := cfg.Cluster.Kubernetes.LeaderService; got != s.pesit.Name {
			t.Errorf("cluster.kubernetes.leaderService = %q, want the PeSIT Service %q", got, s.pesit.Name)
		}
		var rb rbacv1.RoleBinding
		decode(t, s.ms.find(t, "RoleBinding", fullname), &rb)
		sa := pod.Spec.ServiceAccountName
		if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
			rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa || rb.Subjects[0].Namespace != namespace {
			t.Errorf("RoleBinding %+v does not bind Role %s to ServiceAccount %s", rb, role.Name, sa)
		}
		s.ms.find(t, "ServiceAccount", sa)
	}
}

func checkServicePort(t *testing.T, svc corev1.Service, name, target string) {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			if p.TargetPort.String() != target {
				t.Errorf("Service %s port %s targets %s, want container port %s", svc.Name, name, p.TargetPort.String(), target)
			}
			return
		}
	}
	t.Errorf("Service %s has no port %s", svc.Name, name)
}

func TestDefaultsMatchTheIssue(t *testing.T) {
	s := decodeServer(t, render(t, nil))
	if s.pesit.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("PeSIT Service type %s, want ClusterIP", s.pesit.Spec.Type)
	}
	want := map[string]string{"app": "vectis-server", "vectis-leader": "true",
		"app.kubernetes.io/name": "vectis", "app.kubernetes.io/instance": release}
	if !reflect.DeepEqual(s.pesit.Spec.Selector, want) {
		t.Errorf("PeSIT Service selector = %v, want %v", s.pesit.Spec.Selector, want)
	}
	if p := s.pesit.Spec.Ports[0]; p.Port != 5000 {
		t.Errorf("PeSIT Service port %d, want 5000", p.Port)
	}
	if s.api.Spec.Ports[0].Port != 8080 {
		t.Errorf("API Service port %d, want 8080", s.api.Spec.Ports[0].Port)
	}
	if g := *s.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds; g != 60 {
		t.Errorf("terminationGracePeriodSeconds %d, want 60", g)
	}
	var pvc corev1.PersistentVolumeClaim
	decode(t, s.ms.find(t, "PersistentVolumeClaim", fullname+"-data"), &pvc)
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}) {
		t.Errorf("data PVC access modes %v, want ReadWriteMany", pvc.Spec.AccessModes)
	}
	if v := s.volume(t, "data"); v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != pvc.Name {
		t.Errorf("pods do not mount the data PVC: %+v", v)
	}
	for _, kind := range []string{"ServiceMonitor", "PrometheusRule", "StatefulSet", "Pod"} {
		if s.ms.has(kind, "") {
			t.Errorf("%s rendered by default; it must be opt-in", kind)
		}
	}
	if s.ms.has("ConfigMap", fullname+"-dashboard") {
		t.Error("Grafana dashboard rendered by default; it must be opt-in")
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	cases := []struct {
		name     string
		sets     []string
		min, max string // "" = absent
		none     bool
	}{
		{name: "1 replica: none", sets: []string{"replicaCount=1"}, none: true},
		{name: "2 replicas", sets: []string{"replicaCount=2"}, min: "1"},
		{name: "3 replicas", sets: []string{"replicaCount=3"}, min: "2"},
		{name: "5 replicas", sets: []string{"replicaCount=5"}, min: "2"},
		{name: "override minAvailable", sets: []string{"replicaCount=5", "podDisruptionBudget.minAvailable=3"}, min: "3"},
		{name: "maxUnavailable", sets: []string{"replicaCount=3", "podDisruptionBudget.maxUnavailable=1"}, max: "1"},
		{name: "disabled", sets: []string{"replicaCount=3", "podDisruptionBudget.enabled=false"}, none: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ms := render(t, nil, c.sets...)
			pdbs := ms.ofKind("PodDisruptionBudget")
			if c.none {
				if len(pdbs) != 0 {
					t.Fatalf("want no PodDisruptionBudget, got %s", pdbs[0].Raw)
				}
				return
			}
			if len(pdbs) != 1 {
				t.Fatalf("want one PodDisruptionBudget, got %d", len(pdbs))
			}
			var pdb policyv1.PodDisruptionBudget
			decode(t, pdbs[0], &pdb)
			str := func(v fmt.Stringer, isNil bool) string {
				if isNil {
					return ""
				}
				return v.String()
			}
			if got := str(pdb.Spec.MinAvailable, pdb.Spec.MinAvailable == nil); got != c.min {
				t.Errorf("minAvailable = %q, want %q", got, c.min)
			}
			if got := str(pdb.Spec.MaxUnavailable, pdb.Spec.MaxUnavailable == nil); got != c.max {
				t.Errorf("maxUnavailable = %q, want %q", got, c.max)
			}
			var d appsv1.Deployment
			decode(t, ms.find(t, "Deployment", fullname), &d)
			if !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
				t.Errorf("PDB selector %v does not match the pods", pdb.Spec.Selector.MatchLabels)
			}
		})
	}
}

func TestAntiAffinityRequired(t *testing.T) {
	var d appsv1.Deployment
	decode(t, render(t, nil, "podAntiAffinity=required").find(t, "Deployment", fullname), &d)
	aa := d.Spec.Template.Spec.Affinity.PodAntiAffinity
	if len(aa.PreferredDuringSchedulingIgnoredDuringExecution) != 0 || len(aa.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Fatalf("want only a required anti-affinity term, got %+v", aa)
	}
	term := aa.RequiredDuringSchedulingIgnoredDuringExecution[0]
	if term.TopologyKey != "kubernetes.io/hostname" || !labels.SelectorFromSet(term.LabelSelector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("required term %+v", term)
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	cases := []struct {
		set  string
		want []string // every fragment must appear in helm's error
	}{
		{"replicaCount=-1", []string{"/replicaCount", "minimum"}},
		{"replicaCount=0", []string{"/replicaCount", "minimum"}},
		{"replicaCount=1.5", []string{"/replicaCount", "want integer"}},
		{"service.type=Foo", []string{"/service/type", "ClusterIP", "NodePort", "LoadBalancer"}},
		{"apiService.type=ExternalName", []string{"/apiService/type"}},
		{"service.pesit.port=70000", []string{"/service/pesit/port", "maximum"}},
		{"service.pesit.port=0", []string{"/service/pesit/port", "minimum"}},
		{"pesit.tls.port=65536", []string{"/pesit/tls/port", "maximum"}},
		{"service.pesit.nodePort=80", []string{"/service/pesit/nodePort", "minimum"}},
		{"cluster.etcd.endpoints=null", []string{"/cluster/etcd", "endpoints"}},
		{"cluster.etcd.endpoints[0]=etcd:2379", []string{"/cluster/etcd/endpoints/0"}},
		{"replicas=3", []string{"additional properties 'replicas'"}},
		{"podAntiAffinity=always", []string{"/podAntiAffinity", "preferred", "required"}},
		{"persistence.accessMode=ReadOnlyMany", []string{"/persistence/accessMode"}},
		{"metrics.prometheusRule.transferFailureRatio=2", []string{"/metrics/prometheusRule/transferFailureRatio"}},
		{"pesit.partners[0].id=P,pesit.partners[0].password=toolongpassword", []string{"/pesit/partners/0/password", "maxLength"}},
	}
	for _, c := range cases {
		t.Run(c.set, func(t *testing.T) {
			msg := renderErr(t, nil, c.set)
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("error is not a schema rejection:\n%s", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not mention %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestReadWriteOnceServesOneReplicaOnly(t *testing.T) {
	msg := renderErr(t, nil, "persistence.accessMode=ReadWriteOnce", "replicaCount=3")
	for _, w := range []string{"ReadWriteOnce cannot serve replicaCount 3", "ReadWriteMany"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not say %q:\n%s", w, msg)
		}
	}
	ms := render(t, nil, "persistence.accessMode=ReadWriteOnce", "replicaCount=1")
	var pvc corev1.PersistentVolumeClaim
	decode(t, ms.find(t, "PersistentVolumeClaim", fullname+"-data"), &pvc)
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("access modes %v", pvc.Spec.AccessModes)
	}
	// An existing claim is trusted for its mode only as far as the values say.
	if msg := renderErr(t, nil, "persistence.existingClaim=shared", "persistence.accessMode=ReadWriteOnce", "replicaCount=2"); !strings.Contains(msg, "ReadWriteOnce") {
		t.Errorf("existing RWO claim with 2 replicas: %s", msg)
	}
	ms = render(t, nil, "persistence.existingClaim=shared")
	if ms.has("PersistentVolumeClaim", "") {
		t.Error("a PVC is rendered although persistence.existingClaim is set")
	}
	var d appsv1.Deployment
	decode(t, ms.find(t, "Deployment", fullname), &d)
	if v := d.Spec.Template.Spec.Volumes; !slices.ContainsFunc(v, func(v corev1.Volume) bool {
		return v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "shared"
	}) {
		t.Errorf("pods do not mount the existing claim: %+v", v)
	}
}

func TestTemplateFailures(t *testing.T) {
	cases := []struct {
		sets []string
		want string
	}{
		{[]string{"cluster.enabled=false", "replicaCount=2", "store.existingSecret="}, "cluster.enabled false runs a single node"},
		{[]string{"store.existingSecret="}, "a PostgreSQL store is required"},
		{[]string{"pesit.tls.enabled=true"}, "pesit.tls.enabled needs pesit.tls.existingSecret"},
		{[]string{"cluster.etcd.tls.enabled=true"}, "cluster.etcd.tls.enabled needs"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			if msg := renderErr(t, nil, c.sets...); !strings.Contains(msg, c.want) {
				t.Errorf("error does not say %q:\n%s", c.want, msg)
			}
		})
	}
}

func TestStandaloneSingleNode(t *testing.T) {
	s := decodeServer(t, render(t, nil, "cluster.enabled=false", "replicaCount=1", "store.existingSecret=", "persistence.accessMode=ReadWriteOnce"))
	checkServer(t, s, 1)
	if _, ok := s.pesit.Spec.Selector["vectis-leader"]; ok {
		t.Errorf("without the cluster nobody sets the leader label; the PeSIT selector %v would match no pod", s.pesit.Spec.Selector)
	}
	if s.ms.has("Role", "") || s.ms.has("RoleBinding", "") {
		t.Error("no Kubernetes permissions are needed without the cluster")
	}
	cfg := s.loadConfig(t)
	if cfg.Store.Driver != "sqlite" {
		t.Errorf("store driver %q, want sqlite", cfg.Store.Driver)
	}
}

// TestChecksumRollsPods: a configuration change changes the pod template (a
// rollout); an unchanged one does not.
func TestChecksumRollsPods(t *testing.T) {
	sum := func(sets ...string) string {
		var d appsv1.Deployment
		decode(t, render(t, nil, sets...).find(t, "Deployment", fullname), &d)
		v := d.Spec.Template.Annotations["checksum/config"]
		if len(v) != 64 {
			t.Fatalf("checksum/config annotation %q", v)
		}
		return v
	}
	a, b := sum(), sum()
	if a != b {
		t.Errorf("same values, different checksums %s %s", a, b)
	}
	if c := sum("pesit.serverId=OTHERSRV"); c == a {
		t.Error("changing pesit.serverId did not change checksum/config")
	}
}

func TestBundledDependencies(t *testing.T) {
	ms := render(t, nil, "etcd.bundled.enabled=true", "postgresql.bundled.enabled=true",
		"store.existingSecret=", "cluster.etcd.endpoints=null")
	s := decodeServer(t, ms)
	checkServer(t, s, 3)
	cfg := s.loadConfig(t)

	var etcd appsv1.StatefulSet
	decode(t, ms.find(t, "StatefulSet", fullname+"-etcd"), &etcd)
	var hl corev1.Service
	decode(t, ms.find(t, "Service", fullname+"-etcd-headless"), &hl)
	if *etcd.Spec.Replicas != 3 || etcd.Spec.ServiceName != hl.Name || etcd.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("etcd StatefulSet: replicas %d serviceName %s policy %s", *etcd.Spec.Replicas, etcd.Spec.ServiceName, etcd.Spec.PodManagementPolicy)
	}
	if hl.Spec.ClusterIP != "None" || !hl.Spec.PublishNotReadyAddresses ||
		!labels.SelectorFromSet(hl.Spec.Selector).Matches(labels.Set(etcd.Spec.Template.Labels)) {
		t.Errorf("etcd headless Service %+v", hl.Spec)
	}
	c := etcd.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "quay.io/coreos/etcd:v3.6.") {
		t.Errorf("etcd image %s, want quay.io/coreos/etcd:v3.6.x", c.Image)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	var wantCluster, wantEndpoints []string
	for i := 0; i < 3; i++ {
		host := fmt.Sprintf("%s-etcd-%d.%s.%s.svc", fullname, i, hl.Name, namespace)
		wantCluster = append(wantCluster, fmt.Sprintf("%s-etcd-%d=http://%s:2380", fullname, i, host))
		wantEndpoints = append(wantEndpoints, "http://"+host+":2379")
	}
	if env["ETCD_INITIAL_CLUSTER"] != strings.Join(wantCluster, ",") {
		t.Errorf("ETCD_INITIAL_CLUSTER = %s, want %s", env["ETCD_INITIAL_CLUSTER"], strings.Join(wantCluster, ","))
	}
	// The member's own name and peer URL are its pod's, so they appear in the initial cluster.
	if env["ETCD_NAME"] != "$(POD_NAME)" || env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] != fmt.Sprintf("http://$(POD_NAME).%s.%s.svc:2380", hl.Name, namespace) {
		t.Errorf("etcd member identity: name %q peer %q", env["ETCD_NAME"], env["ETCD_INITIAL_ADVERTISE_PEER_URLS"])
	}
	if env["ETCD_INITIAL_CLUSTER_STATE"] != "new" {
		t.Errorf("ETCD_INITIAL_CLUSTER_STATE %q", env["ETCD_INITIAL_CLUSTER_STATE"])
	}
	if !slices.Equal(cfg.Cluster.Etcd.Endpoints, wantEndpoints) {
		t.Errorf("Vectis etcd endpoints %v, want the bundled members %v", cfg.Cluster.Etcd.Endpoints, wantEndpoints)
	}

	var pg appsv1.StatefulSet
	decode(t, ms.find(t, "StatefulSet", fullname+"-postgresql"), &pg)
	if img := pg.Spec.Template.Spec.Containers[0].Image; img != "postgres:16" || *pg.Spec.Replicas != 1 {
		t.Errorf("PostgreSQL image %s replicas %d, want postgres:16 x1", img, *pg.Spec.Replicas)
	}
	if pg.Annotations["vectis.io/development-only"] != "true" {
		t.Error("the bundled PostgreSQL is not marked development-only")
	}
	var store, pgSecret corev1.Secret
	decode(t, ms.find(t, "Secret", fullname+"-store"), &store)
	decode(t, ms.find(t, "Secret", fullname+"-postgresql"), &pgSecret)
	url := string(store.Data["url"])
	if url == "" {
		url = decodeB64(t, store.StringData["url"])
	}
	pw := string(pgSecret.Data["password"])
	wantURL := fmt.Sprintf("postgres://vectis:%s@%s-postgresql.%s.svc:5432/vectis?sslmode=disable", pw, fullname, namespace)
	if len(pw) < 16 || url != wantURL {
		t.Errorf("store URL %q does not reach the bundled PostgreSQL with its password (len %d); want %q", url, len(pw), wantURL)
	}
	ref := s.env(t, "VECTIS_STORE_URL").ValueFrom.SecretKeyRef
	if ref.Name != store.Name || ref.Key != "url" {
		t.Errorf("VECTIS_STORE_URL from %s/%s, want %s/url", ref.Name, ref.Key, store.Name)
	}
}

func decodeB64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return s
	}
	return string(b)
}

// TestHelmTestHook: the hook sends a file through the PeSIT Service and
// receives it back from a virtual file that gives back what it got.
func TestHelmTestHook(t *testing.T) {
	ms := render(t, []string{"ci/e2e-values.yaml"})
	s := decodeServer(t, ms)
	cfg := s.loadConfig(t)
	var pod corev1.Pod
	decode(t, ms.find(t, "Pod", fullname+"-test-transfer"), &pod)
	if pod.Annotations["helm.sh/hook"] != "test" || pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod hook %q restartPolicy %s", pod.Annotations["helm.sh/hook"], pod.Spec.RestartPolicy)
	}
	if labels.SelectorFromSet(s.deploy.Spec.Selector.MatchLabels).Matches(labels.Set(pod.Labels)) ||
		labels.SelectorFromSet(s.api.Spec.Selector).Matches(labels.Set(pod.Labels)) {
		t.Errorf("the test pod's labels %v are selected as a Vectis server", pod.Labels)
	}
	byName := map[string]corev1.Container{}
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		byName[c.Name] = c
	}
	order := []string{}
	for _, c := range pod.Spec.InitContainers {
		order = append(order, c.Name)
	}
	if !slices.Equal(order, []string{"payload", "send", "receive"}) {
		t.Errorf("init containers %v, want payload, send, receive in that order", order)
	}
	addr := fmt.Sprintf("%s.%s.svc:%d", s.pesit.Name, namespace, s.pesit.Spec.Ports[0].Port)
	vfile := "LOOPBACK"
	common := []string{"--addr", addr, "--server-id", cfg.PeSIT.Servers[0].ID, "--partner", "CXCLIENT", "--password-file", "/etc/vectis-test/password", "--retries", "3"}
	wantSend := append(append([]string{"send", "/work/payload"}, common...), "--file", vfile)
	wantRecv := append([]string{"receive", vfile, "/work/received"}, common...)
	if got := byName["send"].Args; !slices.Equal(got, wantSend) {
		t.Errorf("send args %q, want %q", got, wantSend)
	}
	if got := byName["receive"].Args; !slices.Equal(got, wantRecv) {
		t.Errorf("receive args %q, want %q", got, wantRecv)
	}
	if byName["send"].Image != s.container.Image || byName["receive"].Image != s.container.Image {
		t.Error("send and receive must run the Vectis image under test")
	}
	cmp := strings.Join(byName["compare"].Args, " ")
	if !strings.Contains(cmp, "sha256sum /work/received") || !strings.Contains(strings.Join(byName["payload"].Args, " "), "sha256sum /work/payload") {
		t.Errorf("the checksums are not compared: %q", cmp)
	}
	// The password file is the partner password, from a Secret.
	var secretName string
	for _, v := range pod.Spec.Volumes {
		if v.Name == "password" && v.Secret != nil {
			secretName = v.Secret.SecretName
		}
	}
	var sec corev1.Secret
	decode(t, ms.find(t, "Secret", secretName), &sec)
	var partnerPassword string
	for _, p := range cfg.PeSIT.Partners {
		if p.ID == "CXCLIENT" {
			partnerPassword = p.Password
		}
	}
	if got := string(sec.Data["password"]); got == "" || got != partnerPassword {
		t.Errorf("test password %q does not match partner CXCLIENT's %q", got, partnerPassword)
	}
	// The virtual file must give back what was sent: same directory, fixed name.
	i := slices.IndexFunc(cfg.PeSIT.Files, func(f config.VirtualFile) bool { return f.ID == vfile })
	if i < 0 {
		t.Fatalf("virtual file %s is not configured", vfile)
	}
	f := cfg.PeSIT.Files[i]
	if f.Direction != "both" || f.ReceiveDir != f.SendDir || f.NamePattern != "${file}" || !f.Overwrite {
		t.Errorf("virtual file %s cannot round-trip: %+v", vfile, f)
	}
}

// TestE2EValues: the kind profile uses the locally loaded image, small pods,
// external dependencies, and NodePorts that kind-config.yaml maps to the host.
func TestE2EValues(t *testing.T) {
	ms := render(t, []string{"ci/e2e-values.yaml"})
	s := decodeServer(t, ms)
	cfg := s.loadConfig(t)
	if *s.deploy.Spec.Replicas != 3 || s.container.ImagePullPolicy != corev1.PullNever {
		t.Errorf("replicas %d pullPolicy %s, want 3 and Never", *s.deploy.Spec.Replicas, s.container.ImagePullPolicy)
	}
	if cpu := s.container.Resources.Requests.Cpu(); cpu.MilliValue() > 100 {
		t.Errorf("e2e CPU request %s is not small", cpu)
	}
	if len(cfg.Cluster.Etcd.Endpoints) != 3 || ms.has("StatefulSet", "") {
		t.Errorf("e2e must use the external etcd (3 endpoints), got %v", cfg.Cluster.Etcd.Endpoints)
	}
	var store corev1.Secret
	decode(t, ms.find(t, "Secret", fullname+"-store"), &store)
	if !strings.HasPrefix(string(store.Data["url"]), "postgres://") {
		t.Errorf("e2e store URL %q", store.Data["url"])
	}

	var kind struct {
		Nodes []struct {
			Role              string `json:"role"`
			ExtraPortMappings []struct {
				ContainerPort int32 `json:"containerPort"`
				HostPort      int32 `json:"hostPort"`
			} `json:"extraPortMappings"`
			ExtraMounts []struct {
				HostPath      string `json:"hostPath"`
				ContainerPath string `json:"containerPath"`
			} `json:"extraMounts"`
		} `json:"nodes"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, repoFile(t, "kind-config.yaml")), &kind); err != nil {
		// kind, apiVersion and name are not in the struct: decode leniently then.
		if err := yaml.Unmarshal(readFile(t, repoFile(t, "kind-config.yaml")), &kind); err != nil {
			t.Fatalf("kind-config.yaml: %v", err)
		}
	}
	roles := map[string]int{}
	mapped := map[int32]int32{}
	for _, n := range kind.Nodes {
		roles[n.Role]++
		for _, m := range n.ExtraPortMappings {
			mapped[m.ContainerPort] = m.HostPort
		}
		if len(n.ExtraMounts) != 1 || n.ExtraMounts[0].ContainerPath != "/vectis-shared" {
			t.Errorf("kind node %s does not mount the shared directory: %+v", n.Role, n.ExtraMounts)
		}
	}
	if roles["control-plane"] != 1 || roles["worker"] != 3 {
		t.Errorf("kind nodes %v, want 1 control-plane and 3 workers", roles)
	}
	nodePorts := map[string]int32{}
	for _, svc := range []corev1.Service{s.pesit, s.api} {
		if svc.Spec.Type != corev1.ServiceTypeNodePort {
			t.Errorf("Service %s type %s, want NodePort", svc.Name, svc.Spec.Type)
		}
		for _, p := range svc.Spec.Ports {
			nodePorts[p.Name] = p.NodePort
			if _, ok := mapped[p.NodePort]; !ok {
				t.Errorf("Service %s port %s nodePort %d is not mapped to the host by kind-config.yaml", svc.Name, p.Name, p.NodePort)
			}
		}
	}
	if mapped[nodePorts["pesit"]] != 5000 || mapped[nodePorts["pesit-tls"]] != 5001 || mapped[nodePorts["http"]] != 8080 {
		t.Errorf("host ports: pesit %d, pesit-tls %d, api %d; want 5000, 5001, 8080",
			mapped[nodePorts["pesit"]], mapped[nodePorts["pesit-tls"]], mapped[nodePorts["http"]])
	}
	var pvc corev1.PersistentVolumeClaim
	decode(t, ms.find(t, "PersistentVolumeClaim", fullname+"-data"), &pvc)
	var pv corev1.PersistentVolume
	if err := yaml.UnmarshalStrict(readFile(t, repoFile(t, "deploy/kind/shared-pv.yaml")), &pv); err != nil {
		t.Fatalf("deploy/kind/shared-pv.yaml: %v", err)
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != pv.Spec.StorageClassName ||
		!slices.Contains(pv.Spec.AccessModes, corev1.ReadWriteMany) || pv.Spec.Capacity.Storage().Cmp(*pvc.Spec.Resources.Requests.Storage()) < 0 ||
		!strings.HasPrefix(pv.Spec.HostPath.Path, "/vectis-shared/") {
		t.Errorf("the e2e PVC (class %v, %s) cannot bind the kind shared PV (class %s, %v, %s)",
			pvc.Spec.StorageClassName, pvc.Spec.Resources.Requests.Storage(), pv.Spec.StorageClassName, pv.Spec.AccessModes, pv.Spec.Capacity.Storage())
	}
}

// TestNotes renders NOTES.txt (helm template does not) by wrapping it in a
// ConfigMap of a scratch copy of the chart, and checks the leader commands.
func TestNotes(t *testing.T) {
	notes := renderNotes(t, "etcd.bundled.enabled=true", "postgresql.bundled.enabled=true", "store.existingSecret=",
		"cluster.etcd.endpoints=null", "cluster.name=payments")
	for _, want := range []string{
		"kubectl -n " + namespace + " get pods -l vectis-leader=true",
		"etcdctl get --prefix /vectis/payments/election/ --sort-by=CREATE --order=ASCEND --limit=1",
		"etcdctl elect -l /vectis/payments/election",
		"kubectl -n " + namespace + " exec " + fullname + "-etcd-0 -- etcdctl elect -l /vectis/payments/election",
		"/api/cluster/status",
		"DEVELOPMENT ONLY",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, notes)
		}
	}
	// The default cluster name is the release fullname.
	if notes := renderNotes(t); !strings.Contains(notes, "etcdctl elect -l /vectis/"+fullname+"/election") {
		t.Errorf("NOTES.txt with defaults:\n%s", notes)
	}
}

func renderNotes(t *testing.T, sets ...string) string {
	t.Helper()
	dir := copyChart(t)
	notes := readFile(t, filepath.Join(dir, "templates", "NOTES.txt"))
	writeFile(t, filepath.Join(dir, "templates", "NOTES.txt"), "")
	writeFile(t, filepath.Join(dir, "templates", "_notes_under_test.tpl"), `{{- define "notes-under-test" -}}`+string(notes)+`{{- end -}}`)
	writeFile(t, filepath.Join(dir, "templates", "notes-under-test.yaml"),
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\ndata:\n  notes: {{ include \"notes-under-test\" . | quote }}\n")
	args := []string{"template", release, dir, "--namespace", namespace, "--show-only", "templates/notes-under-test.yaml"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, stderr, err := helm(t, args...)
	if err != nil {
		t.Fatalf("render NOTES.txt: %v\n%s", err, stderr)
	}
	var cm corev1.ConfigMap
	if err := yaml.Unmarshal([]byte(out), &cm); err != nil {
		t.Fatalf("notes ConfigMap: %v", err)
	}
	return cm.Data["notes"]
}

// TestKindDependencies: the etcd and PostgreSQL that deploy/kind deploys are
// the ones the e2e values point Vectis at.
func TestKindDependencies(t *testing.T) {
	var objs []object
	for _, f := range []string{"deploy/kind/etcd.yaml", "deploy/kind/postgresql.yaml"} {
		objs = append(objs, parseManifests(t, string(readFile(t, repoFile(t, f))))...)
	}
	ms := manifests(objs)
	var etcd, pg appsv1.StatefulSet
	var etcdHL, pgSvc corev1.Service
	decode(t, ms.find(t, "StatefulSet", "etcd"), &etcd)
	decode(t, ms.find(t, "StatefulSet", "postgresql"), &pg)
	decode(t, ms.find(t, "Service", "etcd-headless"), &etcdHL)
	decode(t, ms.find(t, "Service", "postgresql"), &pgSvc)
	if etcdHL.Spec.ClusterIP != "None" || !etcdHL.Spec.PublishNotReadyAddresses || etcd.Spec.ServiceName != etcdHL.Name {
		t.Errorf("etcd headless Service %+v", etcdHL.Spec)
	}
	var want []string
	for i := int32(0); i < *etcd.Spec.Replicas; i++ {
		want = append(want, fmt.Sprintf("http://etcd-%d.%s.%s.svc:2379", i, etcdHL.Name, etcd.Namespace))
	}
	s := decodeServer(t, render(t, []string{"ci/e2e-values.yaml"}))
	cfg := s.loadConfig(t)
	if !slices.Equal(cfg.Cluster.Etcd.Endpoints, want) {
		t.Errorf("e2e etcd endpoints %v, deploy/kind/etcd.yaml serves %v", cfg.Cluster.Etcd.Endpoints, want)
	}
	var store corev1.Secret
	decode(t, s.ms.find(t, "Secret", fullname+"-store"), &store)
	env := map[string]string{}
	for _, e := range pg.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	wantURL := fmt.Sprintf("postgres://%s:%s@%s.%s.svc:%d/%s?sslmode=disable",
		env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], pgSvc.Name, pg.Namespace, pgSvc.Spec.Ports[0].Port, env["POSTGRES_DB"])
	if got := string(store.Data["url"]); got != wantURL {
		t.Errorf("e2e store URL %q, deploy/kind/postgresql.yaml serves %q", got, wantURL)
	}
}
