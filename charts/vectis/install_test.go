package chart_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vectis-ft/vectis/internal/testenv/kubetest"
)

// TestInstallOnControlPlane installs the e2e profile with helm on a real
// kube-apiserver (and kube-controller-manager), which validates every object
// server-side. Playing the kubelet, it then checks the contract the HA loop
// relies on: with the chart's own ServiceAccount token a pod can label
// itself leader and nothing more, and the PeSIT Service then routes to that
// pod only, and follows the label when it moves.
func TestInstallOnControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane; skipped with -short")
	}
	cp := kubetest.Start(t, kubetest.Options{ControllerManager: true})
	kubeconfig, err := cp.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := helmWithKubeconfig(t, kubeconfig, "install", release, chartDir,
		"--namespace", namespace, "--create-namespace", "--values", "ci/e2e-values.yaml", "--timeout", "60s")
	if err != nil {
		t.Fatalf("helm install on a real kube-apiserver: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(out, "etcdctl elect -l /vectis/vectis-e2e/election") {
		t.Errorf("helm install did not print the leader commands (NOTES.txt):\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := cp.AdminClient(t)

	// The Role is the one the k8s labeller is tested with.
	role, err := admin.RbacV1().Roles(namespace).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("chart Role: %v", err)
	}
	if !reflect.DeepEqual(role.Rules, kubetest.PodLabelerRules) {
		t.Errorf("chart Role rules %+v differ from kubetest.PodLabelerRules %+v that k8s/ is tested with", role.Rules, kubetest.PodLabelerRules)
	}

	// The Deployment controller creates the pods; play their kubelet.
	var pods []corev1.Pod
	waitFor(ctx, t, "3 Vectis pods", func() bool {
		list, err := admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=vectis-server"})
		if err != nil {
			return false
		}
		pods = list.Items
		return len(pods) == 3
	})
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	ips := map[string]string{}
	for i, p := range pods {
		ip := fmt.Sprintf("10.244.0.%d", i+10)
		ips[p.Name] = ip
		cp.SetPodRunning(ctx, t, namespace, p.Name, ip)
	}

	// The pod's own credentials: a token of the chart's ServiceAccount.
	sa := pods[0].Spec.ServiceAccountName
	tok, err := admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s: %v", sa, err)
	}
	podClient, err := kubernetes.NewForConfig(&rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CAPEM},
		BearerToken:     tok.Status.Token,
	})
	if err != nil {
		t.Fatal(err)
	}
	podsAPI := podClient.CoreV1().Pods(namespace)

	// What the labeller does: get itself, list and watch this release's pods, patch labels.
	selector := "app=vectis-server,app.kubernetes.io/instance=" + release
	if _, err := podsAPI.Get(ctx, pods[0].Name, metav1.GetOptions{}); err != nil {
		t.Errorf("get own pod with the chart's Role: %v", err)
	}
	if list, err := podsAPI.List(ctx, metav1.ListOptions{LabelSelector: selector}); err != nil || len(list.Items) != 3 {
		t.Errorf("list pods with the chart's Role: %v (%d pods)", err, len(list.Items))
	}
	w, err := podsAPI.Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Errorf("watch pods with the chart's Role: %v", err)
	} else {
		w.Stop()
	}
	setLeader := func(name, value string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{"vectis-leader":%s}}}`, value)
		if _, err := podsAPI.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch leader label on %s with the chart's Role: %v", name, err)
		}
	}
	// ... and nothing more.
	forbidden := map[string]error{}
	forbidden["delete pod"] = podsAPI.Delete(ctx, pods[1].Name, metav1.DeleteOptions{})
	_, forbidden["list secrets"] = podClient.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
	_, forbidden["update service"] = podClient.CoreV1().Services(namespace).Patch(ctx, fullname+"-pesit", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{})
	_, forbidden["list pods in kube-system"] = podClient.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	_, forbidden["create pod"] = podsAPI.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "intruder"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s with the chart's Role: got %v, want Forbidden", what, err)
		}
	}

	// The PeSIT Service routes to the labelled pod only; the API Service to all.
	pesitIPs := func() []string { return readyEndpoints(ctx, admin, fullname+"-pesit") }
	apiIPs := func() []string { return readyEndpoints(ctx, admin, fullname+"-api") }
	allIPs := []string{ips[pods[0].Name], ips[pods[1].Name], ips[pods[2].Name]}
	slices.Sort(allIPs)
	waitFor(ctx, t, "API Service endpoints on every pod", func() bool { return slices.Equal(apiIPs(), allIPs) })
	if got := pesitIPs(); len(got) != 0 {
		t.Errorf("PeSIT Service has endpoints %v before any leader", got)
	}
	setLeader(pods[0].Name, `"true"`)
	waitFor(ctx, t, "PeSIT endpoints = the leader", func() bool { return slices.Equal(pesitIPs(), []string{ips[pods[0].Name]}) })

	// Failover: the old leader is unlabelled, the new one labelled.
	setLeader(pods[0].Name, "null")
	setLeader(pods[2].Name, `"true"`)
	waitFor(ctx, t, "PeSIT endpoints follow the label", func() bool { return slices.Equal(pesitIPs(), []string{ips[pods[2].Name]}) })
	if got := apiIPs(); !slices.Equal(got, allIPs) {
		t.Errorf("API Service endpoints %v after failover, want every pod %v", got, allIPs)
	}
}

// readyEndpoints returns the sorted ready addresses of a Service's EndpointSlices.
func readyEndpoints(ctx context.Context, cs kubernetes.Interface, svc string) []string {
	list, err := cs.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc,
	})
	if err != nil {
		return nil
	}
	var ips []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				ips = append(ips, e.Addresses...)
			}
		}
	}
	slices.Sort(ips)
	return ips
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
