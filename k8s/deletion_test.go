package k8s

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// TestAwaitDeletion runs AwaitDeletion against a real kube-apiserver with a
// token bound only to the chart's Role.
func TestAwaitDeletion(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	sa := roleClient(ctx, t, cp, "vectis", kubetest.PodLabelerRules)
	log := slog.New(slog.DiscardHandler)

	await := func(pod string) <-chan error {
		done := make(chan error, 1)
		go func() { done <- AwaitDeletion(ctx, sa, PodIdentity{Name: pod, Namespace: ns}, log) }()
		return done
	}
	quiet := func(t *testing.T, done <-chan error, what string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("AwaitDeletion returned %v after %s", err, what)
		case <-time.After(time.Second):
		}
	}

	// A graceful deletion of a pod on a node sets its deletion timestamp
	// and leaves it until the kubelet is done; a finalizer does the same
	// here, where there is no kubelet.
	t.Run("DeletionTimestamp", func(t *testing.T) {
		const pod = "deleting"
		if _, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: pod, Finalizers: []string{"vectis.test/hold"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "vectis", Image: "example.invalid/vectis"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = admin.CoreV1().Pods(ns).Patch(context.Background(), pod, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		})
		done := await(pod)
		setLabel(ctx, t, admin, pod, new("true"))
		quiet(t, done, "a label change")
		deleted := time.Now()
		if err := admin.CoreV1().Pods(ns).Delete(ctx, pod, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("AwaitDeletion: %v, want nil", err)
			}
			t.Logf("deletion seen %v after the delete call", time.Since(deleted).Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatal("the deletion was not seen within 10 s")
		}
	})

	t.Run("Removed", func(t *testing.T) {
		const pod = "removed"
		createPod(ctx, t, admin, pod, nil)
		done := await(pod)
		quiet(t, done, "nothing happened")
		zero := int64(0)
		if err := admin.CoreV1().Pods(ns).Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("AwaitDeletion: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the removal was not seen within 10 s")
		}
	})

	// A pod name that never existed is a configuration error, not a
	// deletion: the node must not stop at start-up because of it.
	t.Run("NeverSeen", func(t *testing.T) {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := AwaitDeletion(sctx, sa, PodIdentity{Name: "no-such-pod", Namespace: ns}, log)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("AwaitDeletion of a pod never seen: %v, want the context's deadline", err)
		}
	})

	t.Run("Forbidden", func(t *testing.T) {
		getOnly := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}
		mc := roleClient(ctx, t, cp, "get-only", getOnly)
		createPod(ctx, t, admin, "watched-without-rights", nil)
		err := AwaitDeletion(ctx, mc, PodIdentity{Name: "watched-without-rights", Namespace: ns}, log)
		if !errors.Is(err, ErrCannotWatchOwnPod) {
			t.Fatalf("AwaitDeletion without list/watch rights: %v, want ErrCannotWatchOwnPod", err)
		}
	})
}
