package kubetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestControlPlane: RBAC holds for a token-only service account, the
// controller manager turns a Deployment into pods, and the API server
// comes back after a restart with its state.
func TestControlPlane(t *testing.T) {
	cp := Start(t, Options{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	const ns = "vectis"
	cfg := cp.ServiceAccountConfig(ctx, t, ns, "vectis", PodLabelerRules)
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "demo"}
	one := int32(2)
	_, err = admin.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/demo"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pods *corev1.PodList
	for {
		// Listing with the service account token checks its Role too.
		pods, err = sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=demo"})
		if err != nil {
			t.Fatalf("service account list pods: %v", err)
		}
		if len(pods.Items) == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment never produced 2 pods (have %d)", len(pods.Items))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("service account list secrets: %v, want Forbidden", err)
	}
	if err := sa.CoreV1().Pods(ns).Delete(ctx, pods.Items[0].Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("service account delete pod: %v, want Forbidden", err)
	}
	if _, err := sa.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("service account list pods in another namespace: %v, want Forbidden", err)
	}

	// Label-driven EndpointSlices: a Service selecting on a leader label
	// gets exactly the labelled, running pod.
	_, err = admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "demo"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "demo", "leader": "true"},
			Ports:    []corev1.ServicePort{{Name: "pesit", Port: 5000}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pods.Items {
		cp.SetPodRunning(ctx, t, ns, p.Name, fmt.Sprintf("10.1.0.%d", i+1))
	}
	if _, err := admin.CoreV1().Pods(ns).Patch(ctx, pods.Items[1].Name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"leader":"true"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		slices, err := admin.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=demo"})
		if err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ips = append(ips, e.Addresses...)
				}
			}
		}
		if len(ips) == 1 && ips[0] == "10.1.0.2" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("EndpointSlice ready addresses = %v, want [10.1.0.2]", ips)
		case <-time.After(200 * time.Millisecond):
		}
	}

	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("list with the API server stopped succeeded")
	}
	start := time.Now()
	if err := cp.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restart to ready: %v", time.Since(start).Round(time.Millisecond))
	got, err := sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=demo"})
	if err != nil || len(got.Items) != 2 {
		t.Fatalf("after restart: %d pods, %v", len(got.Items), err)
	}
}
