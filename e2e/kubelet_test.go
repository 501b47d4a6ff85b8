//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// kubelet plays the kubelet of one fake node for the pods of one
// namespace: each Pod becomes one `vectis serve` process on a loopback
// address of its own, with the Pod's environment, volumes and
// ServiceAccount token. Deleting the Pod stops the process the way a
// kubelet does (SIGTERM, SIGKILL after the grace period; SIGKILL at once
// for a forced delete), and a process that exits takes its Pod with it so
// that the ReplicaSet replaces it.
type kubelet struct {
	cs      kubernetes.Interface
	pods    func() []*corev1.Pod
	ns      string
	node    string
	bin     string
	dir     string // per-pod directories and logs
	shared  string // PersistentVolumeClaims: one directory per claim, shared by every pod (RWX)
	apiURL  string
	caPEM   []byte
	logf    func(string, ...any)
	trigger chan struct{}

	mu      sync.Mutex
	procs   map[types.UID]*podProc
	started map[types.UID]bool
	nextIP  int
	wg      sync.WaitGroup
}

// podProc is the process of one pod.
type podProc struct {
	name, ip, logPath string
	podIP             string
	uid               types.UID
	cmd               *exec.Cmd
	exited            chan struct{}
	cancelProbe       context.CancelFunc

	mu       sync.Mutex
	stopping bool
}

func newKubelet(cs kubernetes.Interface, pods func() []*corev1.Pod, ns, node, bin, dir, apiURL string, caPEM []byte, logf func(string, ...any)) *kubelet {
	return &kubelet{
		cs: cs, pods: pods, ns: ns, node: node, bin: bin,
		dir: filepath.Join(dir, "pods"), shared: filepath.Join(dir, "pvc"),
		apiURL: apiURL, caPEM: caPEM, logf: logf,
		trigger: make(chan struct{}, 1),
		procs:   map[types.UID]*podProc{}, started: map[types.UID]bool{},
		nextIP: 10,
	}
}

// kick asks for a reconciliation (called from the informer's handlers).
func (k *kubelet) kick() {
	select {
	case k.trigger <- struct{}{}:
	default:
	}
}

// run reconciles until ctx ends, then kills every process it started.
func (k *kubelet) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			k.killAll()
			k.wg.Wait()
			return
		case <-k.trigger:
		case <-t.C:
		}
		k.reconcile(ctx)
	}
}

func (k *kubelet) reconcile(ctx context.Context) {
	pods := k.pods()
	seen := map[types.UID]bool{}
	for _, pod := range pods {
		seen[pod.UID] = true
		if pod.Spec.NodeName != "" && pod.Spec.NodeName != k.node {
			continue
		}
		k.mu.Lock()
		proc, started := k.procs[pod.UID], k.started[pod.UID]
		k.mu.Unlock()
		switch {
		case pod.DeletionTimestamp != nil:
			if proc != nil {
				grace := int64(30)
				if pod.DeletionGracePeriodSeconds != nil {
					grace = *pod.DeletionGracePeriodSeconds
				}
				k.stop(proc, time.Duration(grace)*time.Second, true)
			} else {
				k.forget(ctx, pod.Name, pod.UID)
			}
		case !started && (pod.Status.Phase == "" || pod.Status.Phase == corev1.PodPending):
			k.mu.Lock()
			k.started[pod.UID] = true
			k.mu.Unlock()
			if err := k.start(ctx, pod); err != nil && ctx.Err() == nil {
				k.logf("kubelet: start pod %s: %v", pod.Name, err)
				k.failPod(ctx, pod.Name, pod.UID, err.Error())
			}
		}
	}
	// A pod deleted with grace period 0 disappears at once: kill what is left.
	k.mu.Lock()
	var gone []*podProc
	for uid, p := range k.procs {
		if !seen[uid] {
			gone = append(gone, p)
		}
	}
	k.mu.Unlock()
	for _, p := range gone {
		k.stop(p, 0, false)
	}
}

// stop signals a process: SIGKILL when grace is 0, else SIGTERM then
// SIGKILL after grace. deletePod then removes the Pod object for good.
func (k *kubelet) stop(p *podProc, grace time.Duration, deletePod bool) {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	p.stopping = true
	p.mu.Unlock()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		if grace <= 0 {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		} else {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(grace):
				k.logf("kubelet: pod %s still running %v after SIGTERM; SIGKILL", p.name, grace)
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
		}
		<-p.exited
		if deletePod {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			k.forget(ctx, p.name, p.uid)
			cancel()
		}
	}()
}

// forget deletes a terminating Pod object once nothing runs for it, as the
// kubelet does after its containers stopped.
func (k *kubelet) forget(ctx context.Context, name string, uid types.UID) {
	zero := int64(0)
	err := k.cs.CoreV1().Pods(k.ns).Delete(ctx, name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		k.logf("kubelet: delete pod %s: %v", name, err)
	}
}

// failPod reports a pod whose process could not start or died on its own,
// and deletes it so that its ReplicaSet makes a new one.
func (k *kubelet) failPod(ctx context.Context, name string, uid types.UID, msg string) {
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.cs.CoreV1().Pods(k.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || pod.UID != uid {
			return nil
		}
		pod.Status.Phase = corev1.PodFailed
		pod.Status.Message = msg
		for i := range pod.Status.Conditions {
			if pod.Status.Conditions[i].Type == corev1.PodReady || pod.Status.Conditions[i].Type == corev1.ContainersReady {
				pod.Status.Conditions[i].Status = corev1.ConditionFalse
			}
		}
		_, err = k.cs.CoreV1().Pods(k.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	k.forget(ctx, name, uid)
}

func (k *kubelet) killAll() {
	k.mu.Lock()
	procs := make([]*podProc, 0, len(k.procs))
	for _, p := range k.procs {
		procs = append(procs, p)
	}
	k.mu.Unlock()
	for _, p := range procs {
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// Pod IPs. The API server refuses loopback addresses in EndpointSlices, so
// a pod is reported at 10.244.a.b and its process listens on 127.0.a.b:
// loopbackFor is the harness's "pod network route", used by everything
// that connects to a pod (service proxy, probes, status reads).
const podNetPrefix, loopNetPrefix = "10.244.", "127.0."

func loopbackFor(podIP string) string {
	if rest, ok := strings.CutPrefix(podIP, podNetPrefix); ok {
		return loopNetPrefix + rest
	}
	return podIP
}

// allocIP gives each pod an address of its own, never reused in a run, so
// that a probe of a dead pod's address never reaches a new pod. It
// returns the pod IP; the process binds loopbackFor(pod IP).
func (k *kubelet) allocIP() (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := k.nextIP
	if n > 254*200 {
		return "", errors.New("out of loopback addresses")
	}
	k.nextIP++
	// 127.0.<n/245>.<10+n%245>: x >= 10 in every /24.
	n -= 10
	return fmt.Sprintf("%s%d.%d", podNetPrefix, n/245, 10+n%245), nil
}

func (k *kubelet) start(ctx context.Context, pod *corev1.Pod) error {
	if len(pod.Spec.Containers) != 1 {
		return fmt.Errorf("pod %s: %d containers, the harness runs exactly one", pod.Name, len(pod.Spec.Containers))
	}
	if err := k.ensureNode(ctx); err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		err := k.cs.CoreV1().Pods(k.ns).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: k.ns, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: k.node},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("bind: %w", err)
		}
	}
	ip, err := k.allocIP()
	if err != nil {
		return err
	}
	dir := filepath.Join(k.dir, pod.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c := pod.Spec.Containers[0]

	mounts, rewrite, err := k.volumes(ctx, pod, c, dir)
	if err != nil {
		return err
	}
	env, err := k.env(ctx, pod, c, ip)
	if err != nil {
		return err
	}
	kubeconfig, err := k.kubeconfig(ctx, pod, dir)
	if err != nil {
		return err
	}
	_ = mounts
	// The processes reach each other on loopback, not at the pod IPs: the
	// liveness listener (fast failover) is advertised there.
	for _, p := range c.Ports {
		if p.Name == "liveness" {
			env = append(env, "VECTIS_CLUSTER_LIVENESSADVERTISE="+net.JoinHostPort(loopbackFor(ip), strconv.Itoa(int(p.ContainerPort))))
		}
	}
	env = append(env,
		"VECTIS_NODE_BINDADDRESS="+loopbackFor(ip),
		"VECTIS_CLUSTER_KUBERNETES_KUBECONFIG="+kubeconfig,
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME="+dir,
		"TMPDIR="+filepath.Join(dir, "tmp"),
	)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	vars := envMap(env)
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		args[i] = rewrite.Replace(expandVars(a, vars))
	}
	if len(c.Command) > 0 {
		// The image's entrypoint is the vectis binary; a command that names
		// it is replaced by the binary under test.
		args = args[1:]
	}

	logPath := filepath.Join(k.dir, pod.Name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(k.bin, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group (signals reach the whole pod); dies with the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", k.bin, err)
	}
	probeCtx, cancelProbe := context.WithCancel(context.Background())
	p := &podProc{name: pod.Name, uid: pod.UID, ip: loopbackFor(ip), podIP: ip, logPath: logPath, cmd: cmd, exited: make(chan struct{}), cancelProbe: cancelProbe}
	k.mu.Lock()
	k.procs[pod.UID] = p
	k.mu.Unlock()
	k.wg.Add(2)
	go func() {
		defer k.wg.Done()
		err := cmd.Wait()
		logf.Close()
		cancelProbe()
		close(p.exited)
		k.mu.Lock()
		delete(k.procs, p.uid)
		k.mu.Unlock()
		p.mu.Lock()
		stopping := p.stopping
		p.mu.Unlock()
		if !stopping {
			k.logf("kubelet: pod %s: process exited on its own: %v", p.name, err)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			k.failPod(ctx, p.name, p.uid, fmt.Sprintf("process exited: %v", err))
			cancel()
		}
	}()
	go func() { defer k.wg.Done(); k.probe(probeCtx, p) }()
	return k.setStatus(ctx, pod.Name, pod.UID, ip, false)
}

func (k *kubelet) ensureNode(ctx context.Context) error {
	_, err := k.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.node, Labels: map[string]string{"kubernetes.io/hostname": k.node}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

// probe is the readiness probe: GET /readyz on the pod's API port, with the
// Ready condition updated on every change.
func (k *kubelet) probe(ctx context.Context, p *podProc) {
	hc := &http.Client{Timeout: time.Second}
	ready := false
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := false
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.ip+":8080/readyz", nil)
		if resp, err := hc.Do(req); err == nil {
			now = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
		if now != ready && ctx.Err() == nil {
			if err := k.setStatus(ctx, p.name, p.uid, p.podIP, now); err == nil {
				ready = now
			}
		}
	}
}

// setStatus reports the pod Running at ip, Ready or not.
func (k *kubelet) setStatus(ctx context.Context, name string, uid types.UID, ip string, ready bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.cs.CoreV1().Pods(k.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.UID != uid || pod.DeletionTimestamp != nil && ready {
			return nil
		}
		now := metav1.Now()
		cond := corev1.ConditionFalse
		if ready {
			cond = corev1.ConditionTrue
		}
		if pod.Status.StartTime == nil {
			pod.Status.StartTime = &now
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.HostIP = "127.0.0.1"
		pod.Status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
		pod.Status.PodIP = ip
		pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
		pod.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: cond, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: cond, LastTransitionTime: now},
		}
		started := true
		c := pod.Spec.Containers[0]
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *pod.Status.StartTime}},
		}}
		_, err = k.cs.CoreV1().Pods(k.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

// volumes materialises the pod's volumes under dir and returns, for each
// mount, the host path, and a replacer that turns mount paths into host
// paths in arguments and mounted ConfigMap files (the configuration names
// the other mounts).
func (k *kubelet) volumes(ctx context.Context, pod *corev1.Pod, c corev1.Container, dir string) (map[string]string, *strings.Replacer, error) {
	volDirs := map[string]string{}
	var cmFiles []string
	for _, v := range pod.Spec.Volumes {
		vd := filepath.Join(dir, "volumes", v.Name)
		switch {
		case v.ConfigMap != nil:
			cm, err := k.cs.CoreV1().ConfigMaps(k.ns).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			files, err := writeKeys(vd, stringData(cm.Data, cm.BinaryData), v.ConfigMap.Items)
			if err != nil {
				return nil, nil, err
			}
			cmFiles = append(cmFiles, files...)
		case v.Secret != nil:
			// One directory per Secret volume for every pod: on a real node
			// every pod sees its files at the same mount path, and the
			// paths end up in the server definitions the pods share
			// through the store (a per-pod path would make each starting
			// pod "change" the definition).
			vd = filepath.Join(k.dir, "..", "secrets", v.Secret.SecretName+"-"+v.Name)
			s, err := k.cs.CoreV1().Secrets(k.ns).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			if _, err := writeKeys(vd, s.Data, v.Secret.Items); err != nil {
				return nil, nil, err
			}
		case v.EmptyDir != nil:
		case v.PersistentVolumeClaim != nil:
			vd = filepath.Join(k.shared, v.PersistentVolumeClaim.ClaimName)
		default:
			return nil, nil, fmt.Errorf("volume %s: type not supported by the harness", v.Name)
		}
		if err := os.MkdirAll(vd, 0o755); err != nil {
			return nil, nil, err
		}
		volDirs[v.Name] = vd
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		vd, ok := volDirs[m.Name]
		if !ok {
			return nil, nil, fmt.Errorf("mount %s: no volume %s", m.MountPath, m.Name)
		}
		mounts[m.MountPath] = filepath.Join(vd, m.SubPath)
	}
	paths := make([]string, 0, len(mounts))
	for p := range mounts {
		paths = append(paths, p)
	}
	// Longest first, one pass: /etc/vectis/users before /etc, and a host
	// path put in for one mount is never rewritten by another.
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	var pairs []string
	for _, p := range paths {
		pairs = append(pairs, p, mounts[p])
	}
	r := strings.NewReplacer(pairs...)
	for _, f := range cmFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(f, []byte(r.Replace(string(b))), 0o644); err != nil {
			return nil, nil, err
		}
	}
	return mounts, r, nil
}

func stringData(s map[string]string, b map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range b {
		out[k] = v
	}
	for k, v := range s {
		out[k] = []byte(v)
	}
	return out
}

func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	names := map[string]string{}
	if len(items) == 0 {
		for k := range data {
			names[k] = k
		}
	}
	for _, it := range items {
		names[it.Key] = it.Path
	}
	var files []string
	for key, path := range names {
		v, ok := data[key]
		if !ok {
			return nil, fmt.Errorf("key %s missing", key)
		}
		f := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return nil, err
		}
		// Atomically: a running pod may read a shared Secret file.
		tmp := f + ".tmp"
		if err := os.WriteFile(tmp, v, 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, f); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// env resolves the container's environment the way the kubelet does:
// values with $(VAR) references, the downward API, ConfigMap and Secret
// keys, envFrom.
func (k *kubelet) env(ctx context.Context, pod *corev1.Pod, c corev1.Container, ip string) ([]string, error) {
	var env []string
	vars := map[string]string{}
	set := func(name, value string) {
		env = append(env, name+"="+value)
		vars[name] = value
	}
	for _, from := range c.EnvFrom {
		var data map[string][]byte
		switch {
		case from.ConfigMapRef != nil:
			cm, err := k.cs.CoreV1().ConfigMaps(k.ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("envFrom: %w", err)
			}
			data = stringData(cm.Data, cm.BinaryData)
		case from.SecretRef != nil:
			s, err := k.cs.CoreV1().Secrets(k.ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("envFrom: %w", err)
			}
			data = s.Data
		}
		for key, v := range data {
			set(from.Prefix+key, string(v))
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandVars(e.Value, vars))
			continue
		}
		switch vf := e.ValueFrom; {
		case vf.FieldRef != nil:
			v, err := fieldRef(pod, vf.FieldRef.FieldPath, ip)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, v)
		case vf.ConfigMapKeyRef != nil:
			cm, err := k.cs.CoreV1().ConfigMaps(k.ns).Get(ctx, vf.ConfigMapKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			set(e.Name, cm.Data[vf.ConfigMapKeyRef.Key])
		case vf.SecretKeyRef != nil:
			s, err := k.cs.CoreV1().Secrets(k.ns).Get(ctx, vf.SecretKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			v, ok := s.Data[vf.SecretKeyRef.Key]
			if !ok {
				return nil, fmt.Errorf("env %s: secret %s has no key %s", e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
			}
			set(e.Name, string(v))
		default:
			return nil, fmt.Errorf("env %s: source not supported by the harness", e.Name)
		}
	}
	return env, nil
}

func fieldRef(pod *corev1.Pod, path, ip string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "status.podIP":
		return ip, nil
	case "status.hostIP":
		return "127.0.0.1", nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	return "", fmt.Errorf("fieldRef %s not supported by the harness", path)
}

// expandVars expands $(VAR) like the kubelet: unknown references stay as
// they are, $$ escapes.
func expandVars(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if end := strings.IndexByte(s[i:], ')'); end > 0 {
					if v, ok := vars[s[i+2:i+end]]; ok {
						b.WriteString(v)
						i += end
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// kubeconfig asks the TokenRequest API for a token of the pod's
// ServiceAccount, bound to the pod, and writes a kubeconfig with it: the
// process has exactly the rights of the chart's Role.
func (k *kubelet) kubeconfig(ctx context.Context, pod *corev1.Pod, dir string) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	tr, err := k.cs.CoreV1().ServiceAccounts(k.ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for service account %s: %w", sa, err)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, k.caPEM, 0o644); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: %s, namespace: %s}
current-context: e2e
`, k.apiURL, ca, sa, tr.Status.Token, sa, k.ns)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// logPath is where pod name's process writes.
func (k *kubelet) logPath(name string) string { return filepath.Join(k.dir, name+".log") }

// logNames lists every pod that had a process, for dumps.
func (k *kubelet) logNames() []string {
	m, _ := filepath.Glob(filepath.Join(k.dir, "*.log"))
	var names []string
	for _, f := range m {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".log"))
	}
	sort.Strings(names)
	return names
}
