package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// listCounter counts the requests that list the resource named by the
// end of their path (not the watches).
type listCounter struct {
	rt       http.RoundTripper
	resource string
	n        *atomic.Int64
}

func (c listCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/"+c.resource) && r.URL.Query().Get("watch") != "true" {
		c.n.Add(1)
	}
	return c.rt.RoundTrip(r)
}

// TestReconcileFromWatchedPods: with Watch running, a pass starts from the
// watched copy of the pods, with no list (the slowest call of a handover's
// label on a busy cluster), when the copy shows every other labelled pod
// being deleted, as a graceful handover's old leader is. A labelled pod
// the copy shows alive may be being deleted by now: that pass lists. Once
// Watch stops, or without the right to watch, passes list.
func TestReconcileFromWatchedPods(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)

	labeler := func(account string, rules []rbacv1.PolicyRule, lists *atomic.Int64) *Labeler {
		cfg := cp.ServiceAccountConfig(ctx, t, ns, account, rules)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return listCounter{rt: rt, resource: "pods", n: lists} })
		mc, err := NewMetadataClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		l, err := NewLabeler(LabelerConfig{
			Client: mc, Pod: PodIdentity{Name: "vectis-0", Namespace: ns}, Selector: selector,
			MinBackoff: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	// pass runs one pass and reports how many lists it made.
	pass := func(l *Labeler, lists *atomic.Int64) int64 {
		t.Helper()
		before := lists.Load()
		if _, err := l.Reconcile(ctx, nil); err != nil {
			t.Fatal(err)
		}
		return lists.Load() - before
	}
	// copyShows waits until l's copy shows pod with the label value (""
	// for none) and, if deleting, a deletion.
	copyShows := func(l *Labeler, pod, value string, deleting bool) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, func() error {
			pods, _, ok := l.cache.snapshot()
			for _, p := range pods {
				if ok && p.Name == pod && p.Labels[DefaultLabelKey] == value && (p.DeletionTimestamp != nil) == deleting {
					return nil
				}
			}
			return fmt.Errorf("the copy (synced %v) does not show %s labelled %q, deleting %v: %v", ok, pod, value, deleting, pods)
		})
	}

	var lists atomic.Int64
	l := labeler("vectis", kubetest.PodLabelerRules, &lists) // creates the namespace
	leader := map[string]string{"app.kubernetes.io/instance": "vectis", DefaultLabelKey: DefaultLabelValue}
	createPod(ctx, t, admin, "vectis-0", map[string]string{"app.kubernetes.io/instance": "vectis"})
	createPod(ctx, t, admin, "vectis-1", leader)
	createPod(ctx, t, admin, "vectis-2", map[string]string{"app.kubernetes.io/instance": "vectis"})
	// vectis-1, the old leader, is being deleted (a finalizer holds it).
	patchFinalizer(ctx, t, admin, "vectis-1", `["example.com/hold"]`)
	t.Cleanup(func() { patchFinalizer(context.Background(), t, admin, "vectis-1", `null`) })
	if err := admin.CoreV1().Pods(ns).Delete(ctx, "vectis-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() { watched <- l.Watch(wctx) }()
	copyShows(l, "vectis-1", DefaultLabelValue, true)
	if n := pass(l, &lists); n != 0 {
		t.Errorf("a pass whose copy shows the old leader being deleted listed the pods %d times, want 0", n)
	}
	assertLeaders(ctx, t, admin, "vectis-0")

	// Someone labels vectis-2, alive: the copy shows it, and the pass
	// lists before it strips.
	v := DefaultLabelValue
	setLabel(ctx, t, admin, "vectis-2", &v)
	copyShows(l, "vectis-2", v, false)
	if n := pass(l, &lists); n != 1 {
		t.Errorf("a pass whose copy shows another pod labelled and alive listed %d times, want 1", n)
	}
	assertLeaders(ctx, t, admin, "vectis-0")

	stopWatch()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	// Once Watch has stopped, the copy is not trusted: a pass lists.
	if n := pass(l, &lists); n != 1 {
		t.Errorf("a pass after Watch stopped listed %d times, want 1", n)
	}

	// Without the right to watch, Watch gives up at once and passes list.
	var lists2 atomic.Int64
	nw := labeler("nowatch", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"},
	}}, &lists2)
	if err := nw.Watch(ctx); err != nil {
		t.Errorf("Watch without the right to watch: %v, want nil at once", err)
	}
	if n := pass(nw, &lists2); n != 1 {
		t.Errorf("a pass without a watch listed %d times, want 1", n)
	}
}
