//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
	"github.com/vectis-ft/vectis/internal/testenv/pgtest"
	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

const (
	localNamespace = "vectis"
	appLabel       = "vectis-server"
	e2eUser        = "e2e"
	pesitService   = releaseName + "-pesit"
)

// localCluster is the local control-plane backend: kube-apiserver and
// kube-controller-manager (kubetest), a 3-member etcd for Vectis
// (etcdtest), PostgreSQL (pgtest), the chart applied for real, a process
// kubelet and a service proxy. Everything runs on loopback and stops at
// test cleanup.
type localCluster struct {
	t       testing.TB
	dir     string
	bin     string
	helm    string
	etcdctl string
	cp      *kubetest.ControlPlane
	cs      kubernetes.Interface
	etcd    *etcdtest.Cluster
	pgURL   string
	otlp    *otlptest.Receiver
	kubelet *kubelet
	proxy   *serviceProxy
	pods    *store[corev1.Pod, *corev1.Pod]
	slices  *store[discoveryv1.EndpointSlice, *discoveryv1.EndpointSlice]
	apiPass string
	cancel  context.CancelFunc
	done    chan struct{}
}

// e2eBinary is the vectis binary under test (make e2e builds it).
func e2eBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("VECTIS_E2E_BINARY")
	if bin == "" {
		if root, ok := testenv.RepoRoot(); ok {
			if _, err := os.Stat(filepath.Join(root, "bin", "vectis")); err == nil {
				bin = filepath.Join(root, "bin", "vectis")
			}
		}
	}
	if bin == "" {
		testenv.Missing(t, "VECTIS_E2E_BINARY is not set and bin/vectis does not exist (run `make e2e`, or `make build` first)")
	}
	return bin
}

// startLocal starts the whole environment (not the chart: Install does).
func startLocal(t testing.TB) *localCluster {
	t.Helper()
	lc := &localCluster{
		t:       t,
		dir:     t.TempDir(),
		bin:     e2eBinary(t),
		helm:    testenv.Tool(t, "helm"),
		etcdctl: testenv.Tool(t, "etcdctl"),
		apiPass: rand.Text(),
	}
	if d := os.Getenv("VECTIS_E2E_ARTIFACTS"); d != "" {
		lc.dir = d
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Tool(t, "etcd")
	start := time.Now()
	lc.cp = kubetest.Start(t, kubetest.Options{ControllerManager: true, StartTimeout: 3 * time.Minute})
	lc.cs = lc.cp.AdminClient(t)
	lc.etcd = etcdtest.Start(t, etcdtest.Options{Size: 3})
	lc.pgURL = pgtest.Start(t)
	lc.otlp = otlptest.Start(t)
	t.Logf("local control plane, etcd x3, PostgreSQL and OTLP receiver up in %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	lc.cancel = cancel
	lc.cp.EnsureNamespace(ctx, t, localNamespace)
	podsAPI := lc.cs.CoreV1().Pods(localNamespace)
	var kick func()
	lc.pods = newStore[corev1.Pod](func(ctx context.Context, o metav1.ListOptions) ([]corev1.Pod, string, error) {
		l, err := podsAPI.List(ctx, o)
		if err != nil {
			return nil, "", err
		}
		return l.Items, l.ResourceVersion, nil
	}, podsAPI.Watch, func() { kick() })
	slicesAPI := lc.cs.DiscoveryV1().EndpointSlices(localNamespace)
	lc.slices = newStore[discoveryv1.EndpointSlice](func(ctx context.Context, o metav1.ListOptions) ([]discoveryv1.EndpointSlice, string, error) {
		l, err := slicesAPI.List(ctx, o)
		if err != nil {
			return nil, "", err
		}
		return l.Items, l.ResourceVersion, nil
	}, slicesAPI.Watch, nil)
	lc.kubelet = newKubelet(lc.cs, lc.pods.all, localNamespace, kubetest.NodeName,
		lc.bin, lc.dir, lc.cp.URL, lc.cp.CAPEM, t.Logf)
	kick = lc.kubelet.kick
	lc.done = make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(3)
	go func() { defer bg.Done(); lc.pods.run(ctx) }()
	go func() { defer bg.Done(); lc.slices.run(ctx) }()
	go func() { defer bg.Done(); lc.kubelet.run(ctx) }()
	go func() { bg.Wait(); close(lc.done) }()
	if err := lc.pods.waitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	var err error
	lc.proxy, err = newServiceProxy(lc.slices.all, localNamespace, pesitService, "pesit", t.Logf)
	if err != nil {
		cancel()
		<-lc.done
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			lc.Dump(t.Logf)
		}
		lc.proxy.Close()
		cancel()
		<-lc.done
	})
	return lc
}

func (lc *localCluster) Backend() string           { return "local" }
func (lc *localCluster) ClusterName() string       { return clusterNameE2E }
func (lc *localCluster) Replicas() int             { return 3 }
func (lc *localCluster) ServiceAddr() string       { return lc.proxy.Addr() }
func (lc *localCluster) APIAuth() (string, string) { return e2eUser, lc.apiPass }

// values are the --set flags on top of ci/e2e-values.yaml: the test's own
// etcd, PostgreSQL and OTLP receiver, ClusterIP Services (no node ports
// here), traces exported at once.
func (lc *localCluster) values() ([]string, error) {
	eps, err := json.Marshal(lc.etcd.Endpoints())
	if err != nil {
		return nil, err
	}
	// A viewer for the status reads, declared inline through the chart's
	// config value: the chart's users Secret (usersFile) is checked on its
	// own in the install scenario.
	hash, err := bcrypt.GenerateFromPassword([]byte(lc.apiPass), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	users, err := json.Marshal(map[string]any{"vectis": map[string]any{"api": map[string]any{
		"users": []map[string]string{{"name": e2eUser, "passwordHash": string(hash), "role": "viewer"}}}}})
	if err != nil {
		return nil, err
	}
	extraEnv := `[{"name":"OTEL_BSP_SCHEDULE_DELAY","value":"50"},{"name":"OTEL_EXPORTER_OTLP_INSECURE","value":"true"}]`
	return []string{
		"--set", "service.type=ClusterIP",
		"--set", "apiService.type=ClusterIP",
		"--set-json", "cluster.etcd.endpoints=" + string(eps),
		"--set", "store.url=" + lc.pgURL,
		"--set", "telemetry.otel.endpoint=" + lc.otlp.HTTPEndpoint(),
		"--set", "telemetry.otel.protocol=http/protobuf",
		"--set-json", "extraEnv=" + extraEnv,
		"--set-json", "config=" + string(users),
	}, nil
}

// Install renders the chart with `helm template` and applies every
// manifest with server-side apply, which the API server validates.
func (lc *localCluster) Install(ctx context.Context) error {
	root, ok := testenv.RepoRoot()
	if !ok {
		return errors.New("repository root not found")
	}
	sets, err := lc.values()
	if err != nil {
		return err
	}
	args := append([]string{"template", releaseName, filepath.Join(root, "charts", "vectis"),
		"--namespace", localNamespace, "--skip-tests",
		"--values", filepath.Join(root, "charts", "vectis", "ci", "e2e-values.yaml")}, sets...)
	cmd := exec.CommandContext(ctx, lc.helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(lc.dir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(lc.dir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(lc.dir, "helm", "data"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("helm template: %w: %s", err, stderr.String())
	}
	if err := os.WriteFile(filepath.Join(lc.dir, "manifests.yaml"), out, 0o644); err != nil {
		return err
	}
	return applyManifests(ctx, lc.cp.AdminConfig(), localNamespace, out)
}

func (lc *localCluster) Pods(context.Context) ([]Pod, error) {
	var out []Pod
	for _, p := range lc.pods.all() {
		if p.Labels["app"] == appLabel {
			out = append(out, podOf(p))
		}
	}
	return out, nil
}

func podOf(p *corev1.Pod) Pod {
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	out := Pod{
		Name: p.Name, UID: string(p.UID), IP: p.Status.PodIP, Labels: p.Labels,
		Ready: ready, Terminating: p.DeletionTimestamp != nil, Created: p.CreationTimestamp.Time,
		Node: p.Spec.NodeName,
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "vectis" {
			out.ContainerID, out.Restarts = cs.ContainerID, cs.RestartCount
		}
	}
	return out
}

func (lc *localCluster) DeletePod(ctx context.Context, name string, grace *int64) error {
	return lc.cs.CoreV1().Pods(localNamespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: grace})
}

func (lc *localCluster) RolloutRestart(ctx context.Context) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`,
		time.Now().Format(time.RFC3339Nano))
	_, err := lc.cs.AppsV1().Deployments(localNamespace).Patch(ctx, releaseName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

func (lc *localCluster) PodAPI(_ context.Context, p Pod) (string, error) {
	if p.IP == "" {
		return "", fmt.Errorf("pod %s has no IP yet", p.Name)
	}
	return "http://" + loopbackFor(p.IP) + ":8080", nil
}

func (lc *localCluster) PodPeSIT(_ context.Context, p Pod) (string, error) {
	if p.IP == "" {
		return "", fmt.Errorf("pod %s has no IP yet", p.Name)
	}
	return loopbackFor(p.IP) + ":5000", nil
}

func (lc *localCluster) PodPeSITTLS(_ context.Context, p Pod) (string, error) {
	if p.IP == "" {
		return "", fmt.Errorf("pod %s has no IP yet", p.Name)
	}
	return loopbackFor(p.IP) + ":5001", nil
}

func (lc *localCluster) Etcdctl(ctx context.Context, args ...string) (string, error) {
	return runEtcdctl(ctx, lc.etcdctl, append([]string{"--endpoints=" + strings.Join(lc.etcd.Endpoints(), ",")}, args...)...)
}

// runEtcdctl returns what etcdctl printed, also when ctx ends a command
// that watches (elect -l).
func runEtcdctl(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	if err := cmd.Start(); err != nil {
		return "", err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			return out.String(), fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
		}
		return out.String(), nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-waited
		return out.String(), ctx.Err()
	}
}

func (lc *localCluster) PodLog(name string) string {
	b, _ := os.ReadFile(lc.kubelet.logPath(name))
	return string(b)
}

func (lc *localCluster) Dump(logf func(string, ...any)) {
	logf("artifacts (pod logs, manifests) in %s (set VECTIS_E2E_ARTIFACTS to keep them)", lc.dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if pods, err := lc.cs.CoreV1().Pods(localNamespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			logf("pod %s ip=%s phase=%s labels=%v deleting=%v", p.Name, p.Status.PodIP, p.Status.Phase, p.Labels, p.DeletionTimestamp != nil)
		}
	}
	logf("PeSIT Service endpoints: %v", lc.proxy.Endpoints())
	for _, name := range lc.kubelet.logNames() {
		logf("---- log of pod %s (tail) ----\n%s", name, tail(lc.PodLog(name), 40))
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// applyManifests server-side applies every document of a multi-document
// YAML stream, namespaced objects into ns.
func applyManifests(ctx context.Context, cfg *rest.Config, ns string, manifests []byte) error {
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	n := 0
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("decode manifest %d: %w", n, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		n++
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(ns)
			}
			ri = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		}
		if _, err := ri.Apply(ctx, obj.GetName(), &obj, metav1.ApplyOptions{FieldManager: "vectis-e2e", Force: true}); err != nil {
			return fmt.Errorf("apply %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
	}
	if n == 0 {
		return errors.New("helm template rendered no manifest")
	}
	return nil
}
