package k8s

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// putSlice creates or replaces slice name of service, listing pods as
// endpoints, as the EndpointSlice controller would; a pod named with a
// trailing "~" is listed as terminating.
func putSlice(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, service string, pods ...string) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for i, p := range pods {
		name, terminating := strings.CutSuffix(p, "~")
		ready := !terminating
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.0.0.%d", i+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Terminating: &terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name},
		})
	}
	api := cs.DiscoveryV1().EndpointSlices(ns)
	old, err := api.Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = old.ResourceVersion
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = api.Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("put slice %s: %v", name, err)
	}
}

// sliceFixture is a control plane with the chart Role's clients: pods'
// metadata, and the PeSIT Service's slices.
type sliceFixture struct {
	cp    *kubetest.ControlPlane
	admin kubernetes.Interface
	mc    metadata.Interface
	eps   *ServiceEndpoints
}

func newSliceFixture(ctx context.Context, t *testing.T, opts kubetest.Options) *sliceFixture {
	t.Helper()
	cp := kubetest.Start(t, opts)
	cfg := cp.ServiceAccountConfig(ctx, t, ns, "vectis", kubetest.PodLabelerRules)
	mc, err := NewMetadataClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := NewServiceEndpoints(cfg, ns, "vectis-pesit")
	if err != nil {
		t.Fatal(err)
	}
	return &sliceFixture{cp: cp, admin: cp.AdminClient(t), mc: mc, eps: eps}
}

// labeler is pod's labeller, reading the slices through eps.
func (f *sliceFixture) labeler(t *testing.T, pod string, settle time.Duration, eps *ServiceEndpoints, log *slog.Logger) *Labeler {
	t.Helper()
	l, err := NewLabeler(LabelerConfig{Client: f.mc, Pod: PodIdentity{Name: pod, Namespace: ns},
		Selector: selector, Endpoints: eps, SettleTimeout: settle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestReconcileWaitsForTheServiceToDropTheOldLeader: with the PeSIT
// Service named, a new leader strips the old leader's label, then labels
// its own pod only once the Service's slices no longer list the old pod
// (slices of other Services do not count), and confirms its leadership
// again just before. A slice that never changes costs at most the settle
// timeout; a service account that may not read slices labels at once.
func TestReconcileWaitsForTheServiceToDropTheOldLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	f := newSliceFixture(ctx, t, kubetest.Options{})
	cp, admin, eps := f.cp, f.admin, f.eps
	release := map[string]string{"app.kubernetes.io/instance": "vectis"}
	yes := DefaultLabelValue
	for _, p := range []string{"vectis-0", "vectis-1", "vectis-2"} {
		createPod(ctx, t, admin, p, release)
	}
	labeler := func(pod string, settle time.Duration, e *ServiceEndpoints) *Labeler {
		return f.labeler(t, pod, settle, e, slog.New(slog.DiscardHandler))
	}

	// vectis-0 leads; the PeSIT Service lists it, the API Service all three.
	setLabel(ctx, t, admin, "vectis-0", &yes)
	putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-0")
	putSlice(ctx, t, admin, "vectis-api-abcde", "vectis-api", "vectis-0", "vectis-1", "vectis-2")

	t.Run("waits for the slice", func(t *testing.T) {
		var confirms atomic.Int32
		done := make(chan error, 1)
		go func() {
			_, err := labeler("vectis-1", time.Minute, eps).Reconcile(ctx, func(context.Context) error {
				confirms.Add(1)
				return nil
			})
			done <- err
		}()
		waitLeaders(ctx, t, admin, 10*time.Second) // the old label stripped
		// The Service still lists vectis-0: no label yet.
		select {
		case err := <-done:
			t.Fatalf("reconcile returned (%v) while the Service still listed the old leader", err)
		case <-time.After(500 * time.Millisecond):
		}
		assertLeaders(ctx, t, admin)
		// The controller drops vectis-0 from the PeSIT Service; the API
		// Service still lists it, which does not matter.
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit")
		reconciled(t, done, "the Service dropped the old leader")
		assertLeaders(ctx, t, admin, "vectis-1")
		if n := confirms.Load(); n != 2 {
			t.Errorf("confirmed %d times, want 2 (before the first patch, and after the wait)", n)
		}
	})

	t.Run("confirms again after the wait", func(t *testing.T) {
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-1")
		errGone := errors.New("leader key gone")
		var confirms atomic.Int32
		go func() {
			time.Sleep(200 * time.Millisecond)
			putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit")
		}()
		_, err := labeler("vectis-2", time.Minute, eps).Reconcile(ctx, func(context.Context) error {
			if confirms.Add(1) > 1 {
				return errGone // deposed while waiting
			}
			return nil
		})
		if !errors.Is(err, ErrNotConfirmed) || !errors.Is(err, errGone) {
			t.Fatalf("reconcile: %v, want ErrNotConfirmed wrapping the confirmation's error", err)
		}
		assertLeaders(ctx, t, admin) // stripped, and not labelled
	})

	t.Run("bounded by the settle timeout", func(t *testing.T) {
		setLabel(ctx, t, admin, "vectis-1", &yes)
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-1")
		start := time.Now()
		if _, err := labeler("vectis-2", 300*time.Millisecond, eps).Reconcile(ctx, nil); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("labelled after %v, before the settle timeout, while the Service still listed the old leader", took)
		}
		assertLeaders(ctx, t, admin, "vectis-2")
	})

	t.Run("a deleted leader is stripped once the slice marks it terminating", func(t *testing.T) {
		// vectis-2 leads and is being deleted (a finalizer holds it);
		// the controller has not yet written the deletion.
		patchFinalizer(ctx, t, admin, "vectis-2", `["example.com/hold"]`)
		if err := admin.CoreV1().Pods(ns).Delete(ctx, "vectis-2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { patchFinalizer(context.Background(), t, admin, "vectis-2", `null`) })
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-2")
		done := make(chan error, 1)
		go func() {
			_, err := labeler("vectis-1", time.Minute, eps).Reconcile(ctx, nil)
			done <- err
		}()
		time.Sleep(500 * time.Millisecond)
		assertLeaders(ctx, t, admin, "vectis-2") // not stripped yet
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-2~")
		waitLeaders(ctx, t, admin, 10*time.Second) // stripped; vectis-1 waits for the slice to drop it
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit")
		reconciled(t, done, "the Service dropped the deleted leader")
		assertLeaders(ctx, t, admin, "vectis-1")
	})

	t.Run("without the RBAC right", func(t *testing.T) {
		// The slice still lists vectis-1, and the settle timeout is long:
		// only giving up on the forbidden read labels within the bound.
		setLabel(ctx, t, admin, "vectis-1", nil)
		setLabel(ctx, t, admin, "vectis-0", &yes)
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-0")
		limited := cp.ServiceAccountConfig(ctx, t, ns, "no-slices", kubetest.PodLabelerRules[:1])
		noRead, err := NewServiceEndpoints(limited, ns, "vectis-pesit")
		if err != nil {
			t.Fatal(err)
		}
		if err := noRead.AwaitOnly(ctx, "vectis-1"); !errors.Is(err, ErrCannotReadEndpoints) {
			t.Fatalf("AwaitOnly without the right: %v, want ErrCannotReadEndpoints", err)
		}
		l := labeler("vectis-1", time.Minute, noRead)
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := l.Reconcile(rctx, nil); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		assertLeaders(ctx, t, admin, "vectis-1")
		if !l.endpointsOff.Load() {
			t.Error("the labeller will ask for the slices again on every handover")
		}
	})

	t.Run("a leader deleted outright", func(t *testing.T) {
		// Nothing is labelled: the old leader's pod is gone (a grace-0
		// delete), but the controller has not yet written the slice
		// without it.
		setLabel(ctx, t, admin, "vectis-1", nil)
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit", "vectis-9")
		done := make(chan error, 1)
		go func() {
			_, err := labeler("vectis-0", time.Minute, eps).Reconcile(ctx, nil)
			done <- err
		}()
		time.Sleep(500 * time.Millisecond)
		assertLeaders(ctx, t, admin)
		putSlice(ctx, t, admin, "vectis-pesit-abcde", "vectis-pesit")
		reconciled(t, done, "the Service dropped the deleted pod")
		assertLeaders(ctx, t, admin, "vectis-0")
	})
}

// TestReconcileFollowsTheEndpointSliceController runs the real
// EndpointSlice controller behind a Service that selects on the leader
// label: the new leader's label goes on once the controller has written the
// slice without the old leader, well before the settle timeout, and the
// controller then lists the new leader alone.
func TestReconcileFollowsTheEndpointSliceController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	f := newSliceFixture(ctx, t, kubetest.Options{ControllerManager: true})
	cp, admin, eps := f.cp, f.admin, f.eps
	_, err := admin.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "vectis-pesit"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app.kubernetes.io/instance": "vectis", DefaultLabelKey: DefaultLabelValue},
			Ports:    []corev1.ServicePort{{Name: "pesit", Port: 5000, TargetPort: intstr.FromInt32(5000)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release := map[string]string{"app.kubernetes.io/instance": "vectis"}
	for i, p := range []string{"vectis-0", "vectis-1"} {
		createPod(ctx, t, admin, p, release)
		cp.SetPodRunning(ctx, t, ns, p, "10.1.0."+string(rune('1'+i)))
	}
	var logged bytes.Buffer // Reconcile runs on this goroutine
	lbl := func(pod string) *Labeler {
		return f.labeler(t, pod, 30*time.Second, eps, slog.New(slog.NewTextHandler(&logged, nil)))
	}
	served := func(want ...string) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() error {
			listed, err := eps.endpoints(ctx)
			if err != nil {
				return err
			}
			var got []string
			for _, ep := range listed {
				got = append(got, ep.pod)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("the PeSIT Service lists %v, want %v", got, want)
			}
			return nil
		})
	}
	if _, err := lbl("vectis-0").Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	served("vectis-0")
	start := time.Now()
	if _, err := lbl("vectis-1").Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > 15*time.Second {
		t.Errorf("the handover's label took %v: it waited for the settle timeout, not for the controller", took)
	}
	t.Logf("strip, controller's slice without the old leader, label: %v", took)
	if !strings.Contains(logged.String(), "service endpoints settled") {
		t.Errorf("the label did not wait for the controller's slice; log:\n%s", logged.String())
	}
	assertLeaders(ctx, t, admin, "vectis-1")
	served("vectis-1")
}

// reconciled waits for a Reconcile running in the background to return,
// at most 10 s after what the test just did.
func reconciled(t *testing.T, done <-chan error, after string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reconcile: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("not labelled 10 s after %s", after)
	}
}

func patchFinalizer(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod, finalizers string) {
	t.Helper()
	patch := `{"metadata":{"finalizers":` + finalizers + `}}`
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch finalizers of %s: %v", pod, err)
	}
}

// TestRelease: a stepped-down leader leaves its label to the successor,
// which strips it, and removes it itself only when nobody has within the
// grace period.
func TestRelease(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)
	mc := roleClient(ctx, t, cp, "vectis", kubetest.PodLabelerRules)
	createPod(ctx, t, admin, "vectis-0", map[string]string{"app.kubernetes.io/instance": "vectis"})
	l, err := NewLabeler(LabelerConfig{Client: mc, Pod: PodIdentity{Name: "vectis-0", Namespace: ns},
		Selector: selector, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	yes := DefaultLabelValue

	// A successor strips the label 300 ms into a 20 s grace: Release
	// returns then, with nothing left to do.
	setLabel(ctx, t, admin, "vectis-0", &yes)
	go func() {
		time.Sleep(300 * time.Millisecond)
		setLabel(ctx, t, admin, "vectis-0", nil)
	}()
	start := time.Now()
	if err := l.Release(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("Release returned after %v; the successor stripped the label after 300 ms", took)
	}
	assertLeaders(ctx, t, admin)

	// Nobody strips it: removed once the grace is over, not before.
	setLabel(ctx, t, admin, "vectis-0", &yes)
	start = time.Now()
	if err := l.Release(ctx, 400*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("label removed after %v, within the grace of 400 ms", took)
	}
	assertLeaders(ctx, t, admin)

	// The pod is gone: nothing to release.
	if err := admin.CoreV1().Pods(ns).Delete(ctx, "vectis-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := admin.CoreV1().Pods(ns).Get(ctx, "vectis-0", metav1.GetOptions{})
		if err == nil {
			return errors.New("pod still there")
		}
		return nil
	})
	if err := l.Release(ctx, time.Minute); err != nil {
		t.Fatalf("Release of a deleted pod: %v", err)
	}
}

// TestClientRates: the labeller's clients keep up with their own polls
// unless the configuration sets a rate.
func TestClientRates(t *testing.T) {
	if c := withRate(&rest.Config{}, 20, 40); c.QPS != 20 || c.Burst != 40 {
		t.Errorf("unset rate: QPS %v burst %d, want 20/40", c.QPS, c.Burst)
	}
	if c := withRate(&rest.Config{QPS: 7, Burst: 9}, 20, 40); c.QPS != 7 || c.Burst != 9 {
		t.Errorf("a configured rate was overridden: QPS %v burst %d", c.QPS, c.Burst)
	}
	eps, err := NewServiceEndpoints(&rest.Config{Host: "http://127.0.0.1:1", QPS: 5, Burst: 10}, ns, "vectis-pesit")
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := eps.client.(*rest.RESTClient)
	if !ok {
		t.Fatalf("client %T", eps.client)
	}
	if got := rc.GetRateLimiter().QPS(); got < float32(time.Second/endpointsPollInterval) {
		t.Errorf("slice poller's client allows %v requests a second, below its poll rate", got)
	}
}
