package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// podLists counts the requests that list pods (not the watches).
type podLists struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c podLists) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Query().Get("watch") != "true" && r.URL.Query().Has("labelSelector") {
		c.n.Add(1)
	}
	return c.rt.RoundTrip(r)
}

// TestReconcileFromWatchedPods: with Watch running, a pass starts from the
// watched copy of the pods, with no list (the slowest call of a handover's
// label on a busy cluster), and the copy follows changes made by others.
// Without the right to watch, Watch returns and passes list as before.
func TestReconcileFromWatchedPods(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	labeler := func(account string, rules []rbacv1.PolicyRule, lists *atomic.Int64) *Labeler {
		cfg := cp.ServiceAccountConfig(ctx, t, ns, account, rules)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return podLists{rt: rt, n: lists} })
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
	watch := func(l *Labeler) (stop func() error) {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l.Watch(wctx) }()
		return func() error { cancel(); return <-done }
	}

	var lists atomic.Int64
	l := labeler("vectis", kubetest.PodLabelerRules, &lists) // creates the namespace
	createPod(ctx, t, admin, "vectis-0", map[string]string{"app.kubernetes.io/instance": "vectis"})
	createPod(ctx, t, admin, "vectis-1", map[string]string{"app.kubernetes.io/instance": "vectis", DefaultLabelKey: "true"})
	stop := watch(l)
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, _, ok := l.cache.snapshot(); !ok {
			return errors.New("pod copy not synced")
		}
		return nil
	})
	before := lists.Load()
	if _, err := l.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertLeaders(ctx, t, admin, "vectis-0")
	if n := lists.Load() - before; n != 0 {
		t.Errorf("a pass with the copy synced listed the pods %d times, want 0", n)
	}

	// Someone else labels vectis-1 again: the copy shows it, and the next
	// pass strips it without a list.
	v := DefaultLabelValue
	setLabel(ctx, t, admin, "vectis-1", &v)
	testenv.Eventually(t, 10*time.Second, func() error {
		pods, _, _ := l.cache.snapshot()
		for _, p := range pods {
			if p.Name == "vectis-1" && p.Labels[DefaultLabelKey] == v {
				return nil
			}
		}
		return fmt.Errorf("the copy does not show vectis-1 labelled: %v", pods)
	})
	before = lists.Load()
	if _, err := l.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertLeaders(ctx, t, admin, "vectis-0")
	if n := lists.Load() - before; n != 0 {
		t.Errorf("second pass listed the pods %d times, want 0", n)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	// Once Watch has stopped, the copy is not trusted: a pass lists.
	before = lists.Load()
	if _, err := l.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := lists.Load() - before; n != 1 {
		t.Errorf("a pass after Watch stopped listed %d times, want 1", n)
	}

	// Without the right to watch, Watch gives up at once and passes list.
	var lists2 atomic.Int64
	nw := labeler("nowatch", []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"},
	}}, &lists2)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := nw.Watch(ctx); err != nil {
			t.Errorf("Watch without the right to watch: %v, want nil at once", err)
		}
	}()
	wg.Wait()
	setLabel(ctx, t, admin, "vectis-1", &v)
	before = lists2.Load()
	if _, err := nw.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	assertLeaders(ctx, t, admin, "vectis-0")
	if n := lists2.Load() - before; n != 1 {
		t.Errorf("a pass without a watch listed %d times, want 1", n)
	}
}
