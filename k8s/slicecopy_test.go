package k8s

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// TestWaitsReadTheWatchedSlices: with Watch running, the waits read its
// copy of the Service's slices: they return on the controller's write
// without listing the slices. Once Watch stops, they list again; without
// the right to watch, Watch returns ErrCannotReadEndpoints at once and the
// waits list.
func TestWaitsReadTheWatchedSlices(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	endpoints := func(account string, rules []rbacv1.PolicyRule, lists *atomic.Int64) *ServiceEndpoints {
		cfg := cp.ServiceAccountConfig(ctx, t, ns, account, rules)
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return listCounter{rt: rt, resource: "endpointslices", n: lists}
		})
		e, err := NewServiceEndpoints(cfg, ns, "vectis-pesit")
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	var lists atomic.Int64
	eps := endpoints("vectis", kubetest.PodLabelerRules, &lists)
	putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-0")
	putSlice(ctx, t, admin, "vectis-api-abcde", "vectis-api", "vectis-0", "vectis-1")

	wctx, stopWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() { watched <- eps.Watch(wctx) }()
	testenv.Eventually(t, 10*time.Second, func() error {
		if got, _, _, synced := eps.copy.snapshot(); !synced || len(got) != 1 || got[0].pod != "vectis-0" {
			return errors.New("the copy is not synced with the slice listing vectis-0")
		}
		return nil
	})

	// await runs wait in the background and returns the channel of its
	// result and of when it returned.
	type result struct {
		err error
		at  time.Time
	}
	await := func(wait func(context.Context) error) <-chan result {
		done := make(chan result, 1)
		go func() {
			err := wait(ctx)
			done <- result{err, time.Now()}
		}()
		return done
	}
	notYet := func(done <-chan result, what string) {
		t.Helper()
		select {
		case r := <-done:
			t.Fatalf("the wait for %s returned (%v) before the slice changed", what, r.err)
		case <-time.After(300 * time.Millisecond):
		}
	}
	// returned checks that the wait returned, and only once the copy's
	// last write was informerCatchUp old: the controller's informer may
	// not have it before.
	returned := func(done <-chan result, what string) {
		t.Helper()
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("the wait for %s: %v", what, r.err)
			}
			_, _, written, _ := eps.copy.snapshot()
			if age := r.at.Sub(written); age < informerCatchUp {
				t.Errorf("the wait for %s returned %v after the write it waited for, want at least %v", what, age, informerCatchUp)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the wait for %s did not return after the slice changed", what)
		}
	}

	before := lists.Load()
	done := await(func(ctx context.Context) error { return eps.AwaitTerminating(ctx, []string{"vectis-0"}) })
	notYet(done, "vectis-0 terminating")
	putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-0~")
	returned(done, "vectis-0 terminating")
	done = await(func(ctx context.Context) error { return eps.AwaitOnly(ctx, "vectis-1") })
	notYet(done, "no pod but vectis-1")
	putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit") // the other Service still lists vectis-0
	returned(done, "no pod but vectis-1")
	if n := lists.Load() - before; n != 0 {
		t.Errorf("the waits listed the slices %d times with the copy synced, want 0", n)
	}

	stopWatch()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	before = lists.Load()
	if err := eps.AwaitOnly(ctx, "vectis-1"); err != nil {
		t.Fatal(err)
	}
	if n := lists.Load() - before; n != 1 {
		t.Errorf("a wait after Watch stopped listed %d times, want 1", n)
	}

	// A Role that grants list alone: Watch gives up at once, waits list.
	var lists2 atomic.Int64
	listOnly := endpoints("list-only", []rbacv1.PolicyRule{kubetest.PodLabelerRules[0], {
		APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list"},
	}}, &lists2)
	if err := listOnly.Watch(ctx); !errors.Is(err, ErrCannotReadEndpoints) {
		t.Errorf("Watch without the right to watch: %v, want ErrCannotReadEndpoints", err)
	}
	if err := listOnly.AwaitOnly(ctx, "vectis-1"); err != nil {
		t.Fatal(err)
	}
	if n := lists2.Load(); n < 2 { // Watch's list, then the wait's
		t.Errorf("without a watch, the wait did not list (%d lists)", n)
	}
}
