package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// TestMain checks for leaked goroutines after a garbage collection: a
// client-go transport built from a kubeconfig with certificate files runs a
// rotation goroutine that client-go stops from a runtime cleanup, once the
// transport is collected (transport/cache.go), so before a collection it is
// live whether or not the test leaked anything. goleak.VerifyTestMain cannot
// collect first and then failed now and then.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		runtime.GC()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

const (
	ns       = "vectis"
	selector = "app.kubernetes.io/instance=vectis"
)

func createPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, lbl map[string]string) {
	t.Helper()
	_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "vectis", Image: "example.invalid/vectis"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
}

// roleClient is a metadata client whose service account is bound only to
// rules in the test namespace.
func roleClient(ctx context.Context, t *testing.T, cp *kubetest.ControlPlane, account string, rules []rbacv1.PolicyRule) metadata.Interface {
	t.Helper()
	mc, err := NewMetadataClient(cp.ServiceAccountConfig(ctx, t, ns, account, rules))
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

func setLabel(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod string, value *string) {
	t.Helper()
	v := "null"
	if value != nil {
		v = fmt.Sprintf("%q", *value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, DefaultLabelKey, v)
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("admin patch %s: %v", pod, err)
	}
}

// leaders returns the pods carrying the leader label, across the namespace.
func leaders(ctx context.Context, cs kubernetes.Interface) ([]string, error) {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: DefaultLabelKey + "=" + DefaultLabelValue})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range list.Items {
		out = append(out, p.Name)
	}
	return out, nil
}

// waitLeaders waits until exactly the want pods carry the label and
// returns how long that took, for the log.
func waitLeaders(ctx context.Context, t *testing.T, cs kubernetes.Interface, within time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	testenv.Eventually(t, within, func() error {
		got, err := leaders(ctx, cs)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("labelled pods = %v (err %v), want %v", got, err, want)
		}
		return nil
	})
	return time.Since(start)
}

// TestLabeler runs the labeler with a token bound only to the chart's Role
// against a real kube-apiserver.
func TestLabeler(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	saCfg := cp.ServiceAccountConfig(ctx, t, ns, "vectis", kubetest.PodLabelerRules)
	// Fail fast while the API server is down, so the test sees errors.
	saCfg.Timeout = 2 * time.Second
	sa, err := NewMetadataClient(saCfg)
	if err != nil {
		t.Fatal(err)
	}

	release := map[string]string{"app.kubernetes.io/instance": "vectis"}
	for _, p := range []string{"vectis-0", "vectis-1", "vectis-2"} {
		createPod(ctx, t, admin, p, release)
	}
	// Another release's leader: outside the selector, never touched.
	createPod(ctx, t, admin, "zz-other", map[string]string{"app.kubernetes.io/instance": "other", DefaultLabelKey: "true"})

	var hookErrs atomic.Uint64
	l, err := NewLabeler(LabelerConfig{
		Client:         sa,
		Pod:            PodIdentity{Name: "vectis-0", Namespace: ns},
		Selector:       selector,
		ResyncInterval: time.Second,
		MinBackoff:     100 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
		OnError:        func(error) { hookErrs.Add(1) },
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.Run(runCtx, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()
	defer func() { stop(); wg.Wait() }()

	d := waitLeaders(ctx, t, admin, 10*time.Second, "vectis-0", "zz-other")
	t.Logf("own pod labelled in %v", d.Round(time.Millisecond))

	// A stale label on another pod of the release (a previous leader) is
	// stripped on the watch event, well before the 1 s resync.
	yes := "true"
	setLabel(ctx, t, admin, "vectis-1", &yes)
	d = waitLeaders(ctx, t, admin, 5*time.Second, "vectis-0", "zz-other")
	t.Logf("stale label stripped %v after injection", d.Round(time.Millisecond))
	// Someone removes ours: put back.
	setLabel(ctx, t, admin, "vectis-0", nil)
	waitLeaders(ctx, t, admin, 5*time.Second, "vectis-0", "zz-other")
	if n := l.Errors(); n != 0 {
		t.Fatalf("%d errors with a healthy API server", n)
	}

	// API server down: errors are counted and reported through the hook.
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := l.Errors(); n < 2 {
			return fmt.Errorf("%d errors counted with the API server down, want >= 2", n)
		}
		return nil
	})
	if l.Errors() < 2 || hookErrs.Load() != l.Errors() {
		t.Fatalf("errors with the API server down: counter %d, hook %d; want >= 2 and equal", l.Errors(), hookErrs.Load())
	}
	// The labeler owns vectis_k8s_label_errors_total: registered as a
	// collector, it serves the same count.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(l)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "vectis_k8s_label_errors_total" ||
		uint64(mfs[0].GetMetric()[0].GetCounter().GetValue()) != l.Errors() {
		t.Fatalf("gathered %v, want vectis_k8s_label_errors_total = %d", mfs, l.Errors())
	}
	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	// State changed behind the labeler's back while it was cut off.
	setLabel(ctx, t, admin, "vectis-2", &yes)
	setLabel(ctx, t, admin, "vectis-0", nil)
	waitLeaders(ctx, t, admin, 10*time.Second, "vectis-0", "zz-other")
	t.Logf("converged %v after the API server was ready again (%d errors counted while down)",
		time.Since(restarted).Round(time.Millisecond), l.Errors())

	// Step down.
	stop()
	wg.Wait()
	uctx, ucancel := context.WithTimeout(ctx, 5*time.Second)
	defer ucancel()
	if err := l.Unlabel(uctx); err != nil {
		t.Fatal(err)
	}
	waitLeaders(ctx, t, admin, 5*time.Second, "zz-other")
}

// TestLabelerWithoutWatch: a Role without "watch" still converges, on the
// resync timer.
func TestLabelerWithoutWatch(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Outside a pod, NewInClusterOrConfig falls back to the kubeconfig.
	kubeconfig, err := cp.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	restCfg, err := NewInClusterOrConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewInClusterOrConfig(kubeconfig + ".missing"); err == nil {
		t.Fatal("missing kubeconfig accepted")
	}
	saCfg := cp.ServiceAccountConfig(ctx, t, ns, "nowatch", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"},
	}})
	sa, err := NewMetadataClient(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	release := map[string]string{"app.kubernetes.io/instance": "vectis"}
	createPod(ctx, t, admin, "vectis-0", release)
	createPod(ctx, t, admin, "vectis-1", release)
	l, err := NewLabeler(LabelerConfig{
		Client: sa, Pod: PodIdentity{Name: "vectis-1", Namespace: ns}, Selector: selector,
		ResyncInterval: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(runCtx, nil) }()
	defer func() { stop(); <-done }()
	waitLeaders(ctx, t, admin, 5*time.Second, "vectis-1")
	yes := "true"
	setLabel(ctx, t, admin, "vectis-0", &yes)
	waitLeaders(ctx, t, admin, 5*time.Second, "vectis-1")
	if n := l.Errors(); n != 0 {
		t.Fatalf("%d errors; a forbidden watch is not an error", n)
	}
}

func TestPodIdentityRequired(t *testing.T) {
	t.Setenv(EnvPodName, "")
	t.Setenv(EnvPodNamespace, "ns")
	if _, err := PodIdentityFromEnv(); err == nil {
		t.Fatal("missing POD_NAME accepted")
	}
	t.Setenv(EnvPodName, "p")
	id, err := PodIdentityFromEnv()
	if err != nil || id != (PodIdentity{Name: "p", Namespace: "ns"}) {
		t.Fatalf("PodIdentityFromEnv = %+v, %v", id, err)
	}
	mc, err := metadata.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []LabelerConfig{
		{Pod: PodIdentity{Name: "p", Namespace: "ns"}, Selector: "a=b"},              // no client
		{Client: mc, Pod: PodIdentity{Namespace: "ns"}, Selector: "a=b"},             // no name
		{Client: mc, Pod: PodIdentity{Name: "p", Namespace: "ns"}},                   // no selector
		{Client: mc, Pod: PodIdentity{Name: "p", Namespace: "ns"}, Selector: "a=(("}, // bad selector
	} {
		if _, err := NewLabeler(cfg); err == nil {
			t.Errorf("NewLabeler accepted %+v", cfg)
		}
	}
}

// TestNeedsWorkOnMetadataEvents: the metadata client's watch delivers
// *metav1.PartialObjectMetadata; an event showing the label out of place
// must trigger a reconcile, or the labeler would only converge on its
// resync timer.
func TestNeedsWorkOnMetadataEvents(t *testing.T) {
	mc, err := metadata.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLabeler(LabelerConfig{Client: mc, Pod: PodIdentity{Name: "me", Namespace: ns}, Selector: selector})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(name string, lbl map[string]string) *metav1.PartialObjectMetadata {
		return &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}}
	}
	leader := map[string]string{DefaultLabelKey: DefaultLabelValue}
	for _, c := range []struct {
		name string
		ev   watch.Event
		want bool
	}{
		{"own pod lost the label", watch.Event{Type: watch.Modified, Object: pod("me", nil)}, true},
		{"own pod labelled", watch.Event{Type: watch.Modified, Object: pod("me", leader)}, false},
		{"own pod deleted", watch.Event{Type: watch.Deleted, Object: pod("me", leader)}, true},
		{"other pod got the label", watch.Event{Type: watch.Modified, Object: pod("other", leader)}, true},
		{"other pod without it", watch.Event{Type: watch.Added, Object: pod("other", nil)}, false},
		{"labelled pod deleted", watch.Event{Type: watch.Deleted, Object: pod("other", leader)}, false},
		{"bookmark", watch.Event{Type: watch.Bookmark, Object: &metav1.Status{}}, false},
	} {
		if got := l.needsWork(c.ev); got != c.want {
			t.Errorf("%s: needsWork = %t, want %t", c.name, got, c.want)
		}
	}
}
