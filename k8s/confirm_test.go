package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// TestReconcileConfirmsBetweenListAndPatch shows the guard that lets a new
// leader label its pod before its listeners accept: a deposed leader whose
// list of pods already shows its successor's label re-reads the leader
// key before it patches, finds it gone, and touches nothing. The successor
// here labels itself between the old leader's list and its confirmation,
// the worst case of the race. Without the confirmation, the old leader
// strips the successor's label and puts its own back.
func TestReconcileConfirmsBetweenListAndPatch(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	sa := roleClient(ctx, t, cp, "vectis", kubetest.PodLabelerRules)
	release := map[string]string{"app.kubernetes.io/instance": "vectis"}
	createPod(ctx, t, admin, "vectis-0", release)
	createPod(ctx, t, admin, "vectis-1", release)
	labeler := func(pod string) *Labeler {
		l, err := NewLabeler(LabelerConfig{Client: sa, Pod: PodIdentity{Name: pod, Namespace: ns},
			Selector: selector, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	old, successor := labeler("vectis-0"), labeler("vectis-1")
	yes := DefaultLabelValue

	// The old leader leads and is labelled.
	if _, err := old.Reconcile(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("old leader's first label: %v", err)
	}
	assertLeaders(ctx, t, admin, "vectis-0")

	// The successor strips the old label and labels itself, as it does on
	// winning; then the old leader, which has not yet seen its loss,
	// reconciles on the watch event. Its list shows the successor
	// labelled; its confirmation finds the key gone.
	if _, err := successor.Reconcile(ctx, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("successor's label: %v", err)
	}
	assertLeaders(ctx, t, admin, "vectis-1")
	errKeyGone := errors.New("leader key gone")
	confirmed := 0
	_, err := old.Reconcile(ctx, func(context.Context) error { confirmed++; return errKeyGone })
	if !errors.Is(err, ErrNotConfirmed) || !errors.Is(err, errKeyGone) {
		t.Fatalf("deposed leader's reconcile: err %v, want ErrNotConfirmed wrapping the confirmation's error", err)
	}
	if confirmed != 1 {
		t.Fatalf("confirm called %d times, want once", confirmed)
	}
	assertLeaders(ctx, t, admin, "vectis-1")
	if n := old.Errors(); n != 0 {
		t.Errorf("a refused confirmation counted %d label errors; it is not an API failure", n)
	}

	// The race the confirmation closes: the successor labels itself after
	// the old leader listed the pods (nothing to do for it then) and before
	// it confirms. A list taken before the successor's patch cannot name
	// the successor, so the old leader has nothing of the successor's to
	// strip; here it finds its own label missing and would put it back.
	setLabel(ctx, t, admin, "vectis-1", nil)
	setLabel(ctx, t, admin, "vectis-0", &yes)
	setLabel(ctx, t, admin, "vectis-0", nil) // old leader's label stripped by the successor
	_, err = old.Reconcile(ctx, func(ctx context.Context) error {
		setLabel(ctx, t, admin, "vectis-1", &yes) // the successor's label lands meanwhile
		return errKeyGone
	})
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("deposed leader's reconcile: err %v, want ErrNotConfirmed", err)
	}
	assertLeaders(ctx, t, admin, "vectis-1")

	// Nothing to patch: no confirmation is asked for (a steady leader's
	// resyncs cost no etcd read).
	calls := 0
	if _, err := successor.Reconcile(ctx, func(context.Context) error { calls++; return nil }); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Errorf("steady reconcile asked for %d confirmations, want 0", calls)
	}
}

func assertLeaders(ctx context.Context, t *testing.T, cs kubernetes.Interface, want ...string) {
	t.Helper()
	got, err := leaders(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("labelled pods %v, want %v", got, want)
	}
}
