//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vectis-ft/vectis/telemetry/otlptest"
)

// TestKind runs the suite against a kind cluster that deploy/kind/e2e-kind.sh
// (make e2e-kind) created and installed the chart on. It needs Docker and
// kind; without them it is skipped, which is not a pass: the same
// scenarios run on the local control plane (TestLocalControlPlane).
func TestKind(t *testing.T) {
	if b := os.Getenv("VECTIS_E2E_BACKEND"); b != "" && b != "kind" {
		t.Skipf("SKIPPED, NOT PASSED: VECTIS_E2E_BACKEND=%s selects another backend", b)
	}
	if why := kindUnavailable(); why != "" {
		t.Skipf("SKIPPED, NOT PASSED: kind backend unavailable: %s. "+
			"The same scenarios run on the local control-plane backend (TestLocalControlPlane); "+
			"run `make e2e-kind` on a machine with Docker and kind for this backend.", why)
	}
	kc := newKindCluster(t)
	rep := runSuite(t, kc)
	rep.print(os.Stdout)
}

// kindUnavailable says why the kind backend cannot run here ("" if it can).
func kindUnavailable() string {
	var why []string
	if _, err := exec.LookPath("docker"); err != nil {
		why = append(why, "no docker CLI in PATH")
	} else if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		why = append(why, fmt.Sprintf("no Docker engine reachable (docker info: %s)", strings.TrimSpace(string(out))))
	}
	for _, tool := range []string{"kind", "kubectl"} {
		if _, err := exec.LookPath(tool); err != nil {
			why = append(why, "no "+tool+" in PATH")
		}
	}
	if len(why) == 0 && os.Getenv("VECTIS_E2E_KIND") != "1" {
		why = append(why, "VECTIS_E2E_KIND is not 1: the cluster, image and release are made by deploy/kind/e2e-kind.sh (make e2e-kind)")
	}
	if len(why) > 0 {
		why = append(why, "and this machine has no image registry either")
	}
	return strings.Join(why, "; ")
}

// kindCluster is the kind backend: the release installed by e2e-kind.sh,
// pods reached on their own IPs (routed to this host by e2e-kind.sh) or
// else through `kubectl port-forward`, the PeSIT Service through the
// NodePort that kind-config.yaml maps to the host.
type kindCluster struct {
	t        testing.TB
	kctx     string
	ns, deps string
	cs       kubernetes.Interface
	svc      string
	release  string
	// podRoutes: pod IPs are routed to this host (see podAddr).
	podRoutes bool
	// otlp receives the pods' spans on the host's address on the kind
	// network, where e2e-kind.sh points the release's exporter; nil when
	// the run set no such address.
	otlp *otlptest.Receiver

	mu       sync.Mutex
	forwards map[string]string // pod/port -> local address
	procs    []*exec.Cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newKindCluster(t testing.TB) *kindCluster {
	kc := &kindCluster{
		t:         t,
		kctx:      envOr("VECTIS_E2E_KUBECONTEXT", "kind-vectis-e2e"),
		ns:        envOr("VECTIS_E2E_NAMESPACE", "vectis"),
		deps:      envOr("VECTIS_E2E_DEPS_NAMESPACE", "vectis-deps"),
		svc:       envOr("VECTIS_E2E_PESIT_ADDR", "127.0.0.1:5000"),
		release:   envOr("VECTIS_E2E_RELEASE", releaseName),
		podRoutes: os.Getenv("VECTIS_E2E_POD_ROUTES") == "1",
		forwards:  map[string]string{},
	}
	if addr := os.Getenv("VECTIS_E2E_OTLP_HTTP_LISTEN"); addr != "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("VECTIS_E2E_OTLP_HTTP_LISTEN=%q: %v", addr, err)
		}
		kc.otlp = otlptest.StartAt(t, net.JoinHostPort(host, "0"), addr)
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(),
		&clientcmd.ConfigOverrides{CurrentContext: kc.kctx}).ClientConfig()
	if err != nil {
		t.Fatalf("kubeconfig context %s: %v", kc.kctx, err)
	}
	// As the local backend's client: at client-go's default of 5 requests
	// a second, the suite's own polling made a delete call wait for its
	// turn (about 390 ms), which counted as outage.
	cfg.QPS, cfg.Burst = 100, 200
	if kc.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			kc.Dump(t.Logf)
		}
		kc.mu.Lock()
		defer kc.mu.Unlock()
		for _, p := range kc.procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	})
	return kc
}

func (kc *kindCluster) Backend() string            { return "kind" }
func (kc *kindCluster) Traces() *otlptest.Receiver { return kc.otlp }
func (kc *kindCluster) ClusterName() string        { return envOr("VECTIS_E2E_CLUSTER_NAME", clusterNameE2E) }
func (kc *kindCluster) Replicas() int              { return 3 }
func (kc *kindCluster) ServiceAddr() string        { return kc.svc }
func (kc *kindCluster) APIAuth() (string, string)  { return apiUser, apiPassword }
func (kc *kindCluster) Install(ctx context.Context) error {
	// e2e-kind.sh ran `helm upgrade --install` with the image it loaded;
	// here the release must exist.
	_, err := kc.cs.AppsV1().Deployments(kc.ns).Get(ctx, kc.release, metav1.GetOptions{})
	return err
}

func (kc *kindCluster) Pods(ctx context.Context) ([]Pod, error) {
	l, err := kc.cs.CoreV1().Pods(kc.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + appLabel})
	if err != nil {
		return nil, err
	}
	out := make([]Pod, 0, len(l.Items))
	for i := range l.Items {
		out = append(out, podOf(&l.Items[i]))
	}
	return out, nil
}

func (kc *kindCluster) DeletePod(ctx context.Context, name string, grace *int64) error {
	return kc.cs.CoreV1().Pods(kc.ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: grace})
}

func (kc *kindCluster) RolloutRestart(ctx context.Context) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`,
		time.Now().Format(time.RFC3339Nano))
	_, err := kc.cs.AppsV1().Deployments(kc.ns).Patch(ctx, kc.release, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

var forwardingRE = regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) ->`)

// forward starts (once per pod and port) `kubectl port-forward` and
// returns the local address.
func (kc *kindCluster) forward(ctx context.Context, p Pod, port int) (string, error) {
	key := fmt.Sprintf("%s/%d", p.Name, port)
	kc.mu.Lock()
	if a, ok := kc.forwards[key]; ok {
		kc.mu.Unlock()
		return a, nil
	}
	kc.mu.Unlock()
	cmd := exec.Command("kubectl", "--context", kc.kctx, "-n", kc.ns, "port-forward", "pod/"+p.Name, fmt.Sprintf(":%d", port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	kc.mu.Lock()
	kc.procs = append(kc.procs, cmd)
	kc.mu.Unlock()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := forwardingRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		kc.mu.Lock()
		kc.forwards[key] = a
		kc.mu.Unlock()
		return a, nil
	case <-time.After(10 * time.Second):
		return "", fmt.Errorf("kubectl port-forward %s: no local port after 10 s", key)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// podAddr is a pod's own address for port: its IP when e2e-kind.sh routed
// the pod network to this host (VECTIS_E2E_POD_ROUTES=1), so that probes see
// exactly what the pod's socket does; else a kubectl port-forward.
func (kc *kindCluster) podAddr(ctx context.Context, p Pod, port int) (string, error) {
	if kc.podRoutes {
		if p.IP == "" {
			return "", fmt.Errorf("pod %s has no IP yet", p.Name)
		}
		return net.JoinHostPort(p.IP, fmt.Sprint(port)), nil
	}
	return kc.forward(ctx, p, port)
}

func (kc *kindCluster) PodAPI(ctx context.Context, p Pod) (string, error) {
	a, err := kc.podAddr(ctx, p, 8080)
	if err != nil {
		return "", err
	}
	return "http://" + a, nil
}

func (kc *kindCluster) PodPeSIT(ctx context.Context, p Pod) (string, error) {
	return kc.podAddr(ctx, p, 5000)
}

func (kc *kindCluster) PodPeSITTLS(ctx context.Context, p Pod) (string, error) {
	return kc.podAddr(ctx, p, 5001)
}

// Accepting tells a pod that accepts from a closed port behind the
// port-forward: kubectl accepts the local connection either way, but closes
// it at once when the pod's port refuses, while a PeSIT server waits
// silently for CONNECT.
func (kc *kindCluster) Accepting(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: 200 * time.Millisecond}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if kc.podRoutes {
		return true // the pod's own socket accepted
	}
	_ = conn.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// KillContainer kills the process of p's vectis container with SIGKILL,
// from inside its kind node (a crash, or the OOM killer): the pod stays and
// the kubelet restarts the container in it. It returns when the signal was
// sent, as the node's clock read it right after kill(2).
func (kc *kindCluster) KillContainer(ctx context.Context, p Pod) (time.Time, error) {
	return kc.signalContainer(ctx, p, "KILL")
}

// StopContainer freezes the process of p's vectis container (SIGSTOP): a
// hung process, which acts on no signal but SIGKILL.
func (kc *kindCluster) StopContainer(ctx context.Context, p Pod) error {
	_, err := kc.signalContainer(ctx, p, "STOP")
	return err
}

// signalContainer sends sig to p's container process and returns when it
// did so. The time comes from the node, read right after kill(2): docker
// exec itself takes from tens to hundreds of milliseconds on a loaded host,
// and a failover clock started before it would count that as outage. A
// kind node is a container on this host's kernel, so its clock is this
// process's wall clock.
func (kc *kindCluster) signalContainer(ctx context.Context, p Pod, sig string) (time.Time, error) {
	id, ok := strings.CutPrefix(p.ContainerID, "containerd://")
	if !ok || p.Node == "" {
		return time.Time{}, fmt.Errorf("pod %s: no containerd container on a node yet (%q on %q)", p.Name, p.ContainerID, p.Node)
	}
	script := `pid=$(crictl inspect -o go-template --template '{{.info.pid}}' "$1") && kill -"$2" "$pid" && date +%s.%N`
	out, err := exec.CommandContext(ctx, "docker", "exec", p.Node, "sh", "-c", script, "signal", id, sig).Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("SIG%s to container %s of pod %s on %s: %w", sig, id, p.Name, p.Node, err)
	}
	at, err := parseUnixNano(strings.TrimSpace(string(out)))
	if err != nil {
		return time.Time{}, fmt.Errorf("SIG%s to container %s of pod %s: the node's time of the signal: %w", sig, id, p.Name, err)
	}
	return at, nil
}

// parseUnixNano parses date +%s.%N.
func parseUnixNano(s string) (time.Time, error) {
	sec, frac, ok := strings.Cut(s, ".")
	if !ok || len(frac) != 9 {
		return time.Time{}, fmt.Errorf("not seconds.nanoseconds: %q", s)
	}
	si, err1 := strconv.ParseInt(sec, 10, 64)
	ni, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, fmt.Errorf("not seconds.nanoseconds: %q", s)
	}
	return time.Unix(si, ni), nil
}

func (kc *kindCluster) Etcdctl(ctx context.Context, args ...string) (string, error) {
	return runEtcdctl(ctx, "kubectl", append([]string{"--context", kc.kctx, "-n", kc.deps, "exec", "etcd-0", "--", "etcdctl"}, args...)...)
}

func (kc *kindCluster) PodLog(name string) string {
	out, _ := exec.Command("kubectl", "--context", kc.kctx, "-n", kc.ns, "logs", name).Output()
	return string(out)
}

func (kc *kindCluster) Dump(logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := kc.cs.CoreV1().Pods(kc.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		logf("list pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		logf("pod %s ip=%s phase=%s labels=%v", p.Name, p.Status.PodIP, p.Status.Phase, p.Labels)
		logf("---- log of pod %s (tail) ----\n%s", p.Name, tail(kc.PodLog(p.Name), 40))
	}
}

var (
	_ Cluster = (*kindCluster)(nil)
	_ Cluster = (*localCluster)(nil)
)
