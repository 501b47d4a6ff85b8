package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
)

// podsResource is the only resource the labeler touches. It goes through
// the metadata client (PartialObjectMetadata): labels are all it reads or
// writes, and the typed clientset would link every API group into the
// binary (about half of its size) for one patch and one watch.
var podsResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// Defaults for LabelerConfig.
const (
	DefaultLabelKey       = "vectis-leader"
	DefaultLabelValue     = "true"
	DefaultResyncInterval = 10 * time.Second
	DefaultMinBackoff     = 200 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultSettleTimeout  = 300 * time.Millisecond
	// DefaultReleaseGrace is how long a stepped-down leader leaves its
	// label to a successor (see Release): a handover's label work takes
	// a few hundred milliseconds on a busy cluster.
	DefaultReleaseGrace = time.Second
)

// LabelerConfig configures a Labeler.
type LabelerConfig struct {
	// Client reads and patches pods' metadata; see NewMetadataClient.
	Client metadata.Interface
	Pod    PodIdentity
	// Selector selects every pod of the release, e.g.
	// "app.kubernetes.io/instance=vectis". Pods outside it are never touched.
	Selector string
	// LabelKey/LabelValue: the label the Service selects on (default
	// vectis-leader=true).
	LabelKey, LabelValue string
	// ResyncInterval: how often the state is re-read even without a watch
	// event (default 10 s).
	ResyncInterval time.Duration
	// MinBackoff/MaxBackoff bound the retry delay after a failure.
	MinBackoff, MaxBackoff time.Duration
	// Endpoints, if set, reads the EndpointSlices of the Service that
	// selects on the label. Before labelling this pod, the labeller then
	// waits until that Service's slices list no other pod (one it
	// stripped, or one deleted outright), and before stripping a pod
	// being deleted, until they mark it terminating; each wait lasts at
	// most SettleTimeout (default 300 ms). ServiceEndpoints says why.
	Endpoints     *ServiceEndpoints
	SettleTimeout time.Duration
	// OnError, if set, is called for every failed reconciliation or unlabel
	// attempt, besides the count in vectis_k8s_label_errors_total. It must
	// not block.
	OnError func(error)
	Logger  *slog.Logger
}

// Confirm reports, with a linearizable read of the leader key, that this
// node still leads; a non-nil error means it may not. The labeler calls it
// after it has listed the pods and before it patches any: a list taken
// after the next leader's first patch is then always followed by a read
// that finds the key gone, so a deposed leader never strips its
// successor's label or puts its own back. A nil Confirm checks nothing.
type Confirm func(context.Context) error

// ErrNotConfirmed wraps a Confirm failure: the labeler patched nothing.
var ErrNotConfirmed = errors.New("k8s: leadership not confirmed; no label patched")

// Labeler puts the leader label on its own pod and strips it from every
// other pod of the release. Run it while leading; call Unlabel after
// stepping down (and at start-up, for a label left by a crash).
//
// A Labeler is a prometheus.Collector of its own error counter,
// vectis_k8s_label_errors_total: register it where the process's metrics
// are served.
type Labeler struct {
	cfg      LabelerConfig
	pods     metadata.ResourceInterface
	selector labels.Selector
	log      *slog.Logger
	errors   prometheus.Counter
	// endpointsOff is set once reading the Service's slices was forbidden.
	endpointsOff atomic.Bool
	// cache is the pods as Watch keeps them.
	cache podCache
}

// NewLabeler validates cfg and fills defaults.
func NewLabeler(cfg LabelerConfig) (*Labeler, error) {
	if cfg.Client == nil {
		return nil, errors.New("k8s: labeler: no client")
	}
	if err := cfg.Pod.Validate(); err != nil {
		return nil, err
	}
	if cfg.Selector == "" {
		return nil, errors.New("k8s: labeler: empty pod selector (it would match every pod of the namespace)")
	}
	sel, err := labels.Parse(cfg.Selector)
	if err != nil {
		return nil, fmt.Errorf("k8s: labeler: selector %q: %w", cfg.Selector, err)
	}
	if cfg.LabelKey == "" {
		cfg.LabelKey = DefaultLabelKey
	}
	if cfg.LabelValue == "" {
		cfg.LabelValue = DefaultLabelValue
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Labeler{
		cfg:      cfg,
		pods:     cfg.Client.Resource(podsResource).Namespace(cfg.Pod.Namespace),
		selector: sel,
		log:      cfg.Logger.With("pod", cfg.Pod.Name, "namespace", cfg.Pod.Namespace, "label", cfg.LabelKey),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_k8s_label_errors_total",
			Help: "Failed attempts to set or remove the leader pod label.",
		}),
	}, nil
}

// UseLogger replaces the configured logger (the node's own, once it has
// one). Call it before Run, Reconcile or any other method.
func (l *Labeler) UseLogger(log *slog.Logger) {
	l.log = log.With("pod", l.cfg.Pod.Name, "namespace", l.cfg.Pod.Namespace, "label", l.cfg.LabelKey)
}

// Describe implements prometheus.Collector.
func (l *Labeler) Describe(ch chan<- *prometheus.Desc) { l.errors.Describe(ch) }

// Collect implements prometheus.Collector.
func (l *Labeler) Collect(ch chan<- prometheus.Metric) { l.errors.Collect(ch) }

// Errors is the number of failed API attempts so far: the value of
// vectis_k8s_label_errors_total.
func (l *Labeler) Errors() uint64 {
	var m dto.Metric
	if err := l.errors.Write(&m); err != nil {
		return 0 // a plain counter cannot fail to write
	}
	return uint64(m.GetCounter().GetValue())
}

func (l *Labeler) fail(err error) {
	l.errors.Inc()
	if l.cfg.OnError != nil {
		l.cfg.OnError(err)
	}
}

// Run keeps the label on this pod only, until ctx ends. It reconciles at
// once, on every watch event about the release's pods, and every
// ResyncInterval; failures are retried with exponential backoff. Without
// RBAC watch rights it falls back to the timer alone. Each pass is guarded
// by confirm (see Reconcile). It returns ctx's error.
func (l *Labeler) Run(ctx context.Context, confirm Confirm) error {
	var (
		backoff  = l.cfg.MinBackoff
		w        watch.Interface
		events   <-chan watch.Event
		canWatch = true
	)
	defer func() {
		if w != nil {
			w.Stop()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	dirty := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			dirty = true
		case ev, ok := <-events:
			switch {
			case !ok:
				// Watch ended (API server restart, timeout): re-list and
				// watch again.
				w, events = nil, nil
				dirty = true
			case ev.Type == watch.Error:
				w.Stop()
				w, events = nil, nil
				dirty = true
			case l.needsWork(ev):
				dirty = true
			default:
				continue
			}
		}
		if !dirty {
			continue
		}
		rv, err := l.reconcile(ctx, confirm, false)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, ErrNotConfirmed) {
				l.fail(err) // an API failure; a lost leadership is not one
			}
			l.log.Warn("k8s: leader label reconcile failed", "err", err, "retry", backoff)
			resetTimer(timer, jitter(backoff))
			backoff = min(2*backoff, l.cfg.MaxBackoff)
			continue
		}
		dirty = false
		backoff = l.cfg.MinBackoff
		if w == nil && canWatch {
			w, err = l.pods.Watch(ctx, metav1.ListOptions{
				LabelSelector:       l.cfg.Selector,
				ResourceVersion:     rv,
				AllowWatchBookmarks: true,
			})
			switch {
			case err == nil:
				events = w.ResultChan()
			case apierrors.IsForbidden(err):
				canWatch = false
				l.log.Info("k8s: no RBAC right to watch pods, reconciling on a timer only", "every", l.cfg.ResyncInterval)
			default:
				w = nil
				l.fail(fmt.Errorf("k8s: watch pods: %w", err))
			}
		}
		resetTimer(timer, jitter(l.cfg.ResyncInterval))
	}
}

// needsWork reports whether a watch event shows a pod out of place.
func (l *Labeler) needsWork(ev watch.Event) bool {
	pod, ok := ev.Object.(*metav1.PartialObjectMetadata)
	if !ok {
		return false // bookmarks and the like
	}
	v, has := pod.Labels[l.cfg.LabelKey]
	if pod.Name == l.cfg.Pod.Name {
		return ev.Type == watch.Deleted || !has || v != l.cfg.LabelValue
	}
	return ev.Type != watch.Deleted && has
}

// Reconcile makes one pass: strip the label from every other pod of the
// release, then put it on this pod. When a patch is needed, confirm runs
// between the list and the first patch (beside the wait for a deleted
// leader, below); if it fails, nothing is patched and the error wraps
// ErrNotConfirmed. With Endpoints set, a pass that
// strips a pod being deleted first waits for the Service's slices to mark
// it terminating, and a pass that must label this pod first waits for the
// slices to list no other pod (stripped, or deleted) and confirms again;
// each wait lasts at most SettleTimeout. It returns the list's resource
// version, from which a watch can start.
//
// While Watch is running and synced, the pass starts from its copy of the
// pods instead of a list.
func (l *Labeler) Reconcile(ctx context.Context, confirm Confirm) (string, error) {
	return l.reconcile(ctx, confirm, true)
}

// reconcile is Reconcile; cached says whether Watch's copy may stand in for
// the list. Run's passes list: they follow watch events, often their own
// patches, which the copy may not show yet.
func (l *Labeler) reconcile(ctx context.Context, confirm Confirm, cached bool) (string, error) {
	// steps times each call of a pass that patches, for its log line: a
	// handover's label is a chain of API calls and waits, and which one was
	// slow is what an operator needs to know.
	var steps []any
	last := time.Now()
	step := func(name string) {
		now := time.Now()
		steps = append(steps, name, now.Sub(last).Round(time.Millisecond).String())
		last = now
	}
	list, err := l.listPods(ctx, cached)
	if err != nil {
		return "", err
	}
	step("list")
	needsPatch := l.needsPatch(list.Items)
	// The confirmation must come after the read of the pods and before the
	// first patch; it runs beside the wait below, which is as long as an
	// etcd read on a busy cluster. A successor that wins meanwhile is not
	// in the pods read, so the strip below cannot touch it, and the label
	// of this pod is confirmed again after any wait.
	var confirmed chan error
	if confirm != nil && needsPatch {
		confirmed = make(chan error, 1)
		go func() { confirmed <- confirm(ctx) }()
	}
	awaited := false
	if needsPatch {
		// A labelled pod being deleted (a graceful handover) makes the
		// controller write the Service's slices once for the deletion; a
		// strip within milliseconds of it would meet the controller
		// before it has seen that write.
		if deleted := l.deletedLeaders(list.Items); len(deleted) > 0 {
			awaited = l.awaitEndpoints(ctx, "the deleted leader terminating", func(ctx context.Context, e *ServiceEndpoints) error {
				return e.AwaitTerminating(ctx, deleted)
			})
			step("await_terminating")
		}
	}
	if confirmed != nil {
		if err := <-confirmed; err != nil {
			return "", fmt.Errorf("%w: %w", ErrNotConfirmed, err)
		}
		step("confirm")
	}
	var errs []error
	var self *metav1.PartialObjectMetadata
	for i := range list.Items {
		p := &list.Items[i]
		if p.Name == l.cfg.Pod.Name {
			self = p
			continue
		}
		if _, has := p.Labels[l.cfg.LabelKey]; !has {
			continue
		}
		// Stripping first: the old leader has stopped serving, so the
		// Service should stop sending to it even if labelling us fails.
		if err := l.patchLabel(ctx, p.Name, nil); err != nil {
			errs = append(errs, err)
		} else {
			l.log.Info("k8s: removed stale leader label", "from", p.Name)
		}
		step("strip")
	}
	if self == nil {
		// Our pod does not match the selector: label it anyway, but say so.
		got, err := l.pods.Get(ctx, l.cfg.Pod.Name, metav1.GetOptions{})
		if err != nil {
			return "", errors.Join(append(errs, fmt.Errorf("k8s: get own pod: %w", err))...)
		}
		if !l.selector.Matches(labels.Set(got.Labels)) {
			l.log.Warn("k8s: own pod does not match the release selector", "selector", l.cfg.Selector)
		}
		self = got
	}
	if self.Labels[l.cfg.LabelKey] != l.cfg.LabelValue {
		waited := l.awaitEndpoints(ctx, "no other pod", func(ctx context.Context, e *ServiceEndpoints) error {
			return e.AwaitOnly(ctx, self.Name)
		})
		if waited {
			step("await_only")
		}
		if (waited || awaited) && confirm != nil {
			// The waits widened the window between the confirmation and
			// the patch; narrow it again.
			if err := confirm(ctx); err != nil {
				return "", errors.Join(append(errs, fmt.Errorf("%w: %w", ErrNotConfirmed, err))...)
			}
			step("confirm_again")
		}
		value := l.cfg.LabelValue
		if err := l.patchLabel(ctx, self.Name, &value); err != nil {
			errs = append(errs, err)
		} else {
			step("label")
			l.log.Info("k8s: labelled own pod as leader", steps...)
		}
	}
	return list.ResourceVersion, errors.Join(errs...)
}

// listPods returns the release's pods: Watch's copy when cached is true
// and the copy is synced, a list otherwise.
func (l *Labeler) listPods(ctx context.Context, cached bool) (*metav1.PartialObjectMetadataList, error) {
	if cached {
		if pods, rv, ok := l.cache.snapshot(); ok && !l.mayBeStale(pods) {
			out := &metav1.PartialObjectMetadataList{Items: pods}
			out.ResourceVersion = rv
			return out, nil
		}
	}
	list, err := l.pods.List(ctx, metav1.ListOptions{LabelSelector: l.cfg.Selector})
	if err != nil {
		return nil, fmt.Errorf("k8s: list pods %q: %w", l.cfg.Selector, err)
	}
	return list, nil
}

// mayBeStale reports whether a copy of the pods may miss what the pass
// depends on: another pod still labelled and not being deleted. In a
// graceful handover the copy normally shows the old leader's deletion
// already (it was made before the old leader resigned); but a watch event
// can lag behind the election on a busy cluster, and a pass that took a
// pod being deleted for a live one would strip it without waiting for the
// controller to write the deletion, which costs the Service the
// controller's one-second retry (see ServiceEndpoints). A list settles it;
// it is only needed then (a crashed leader's container, or the copy
// behind).
func (l *Labeler) mayBeStale(pods []metav1.PartialObjectMetadata) bool {
	for i := range pods {
		p := &pods[i]
		if _, has := p.Labels[l.cfg.LabelKey]; has && p.Name != l.cfg.Pod.Name && p.DeletionTimestamp == nil {
			return true
		}
	}
	return false
}

// awaitEndpoints runs wait (ServiceEndpoints.AwaitOnly or
// AwaitTerminating) on the Service's endpoints for at most SettleTimeout;
// what names the state waited for, for the log. It reports whether it
// waited at all. Whatever the outcome, labelling goes on: the wait only
// spares the Service the EndpointSlice controller's one-second retry (see
// ServiceEndpoints).
func (l *Labeler) awaitEndpoints(ctx context.Context, what string, wait func(context.Context, *ServiceEndpoints) error) bool {
	if l.cfg.Endpoints == nil || l.endpointsOff.Load() {
		return false
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, l.cfg.SettleTimeout)
	defer cancel()
	err := wait(wctx, l.cfg.Endpoints)
	service := l.cfg.Endpoints.Service()
	switch {
	case err == nil:
		l.log.Info("k8s: service endpoints settled", "service", service, "now", what, "took", time.Since(start))
	case errors.Is(err, ErrCannotReadEndpoints):
		l.endpointsOff.Store(true)
		l.log.Warn("k8s: cannot read the service's endpoints; labelling without waiting for them", "err", err)
	case ctx.Err() != nil:
	default:
		l.log.Info("k8s: service endpoints not settled; going on", "service", service, "want", what, "waited", time.Since(start), "err", err)
	}
	return true
}

// deletedLeaders returns the other pods that carry the label and are being
// deleted, when this pod still needs the label.
func (l *Labeler) deletedLeaders(pods []metav1.PartialObjectMetadata) []string {
	var deleted []string
	for i := range pods {
		p := &pods[i]
		if p.Name == l.cfg.Pod.Name {
			if p.Labels[l.cfg.LabelKey] == l.cfg.LabelValue {
				return nil
			}
			continue
		}
		if _, has := p.Labels[l.cfg.LabelKey]; has && p.DeletionTimestamp != nil {
			deleted = append(deleted, p.Name)
		}
	}
	return deleted
}

// needsPatch reports whether the pods listed call for a patch: another pod
// labelled, or this one missing from the list or not labelled.
func (l *Labeler) needsPatch(pods []metav1.PartialObjectMetadata) bool {
	selfOK := false
	for i := range pods {
		v, has := pods[i].Labels[l.cfg.LabelKey]
		if pods[i].Name == l.cfg.Pod.Name {
			selfOK = has && v == l.cfg.LabelValue
		} else if has {
			return true
		}
	}
	return !selfOK
}

// Unlabel removes the label from this pod, retrying with backoff until it
// succeeds or ctx ends. A missing pod counts as success.
func (l *Labeler) Unlabel(ctx context.Context) error {
	backoff := l.cfg.MinBackoff
	for {
		err := l.patchLabel(ctx, l.cfg.Pod.Name, nil)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("k8s: unlabel: %w (last error: %v)", ctx.Err(), err)
		}
		l.fail(err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("k8s: unlabel: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, l.cfg.MaxBackoff)
	}
}

// Release removes the label from this pod after a step-down, unless
// someone else does first. A successor strips this pod's label before it
// labels its own, after waiting for the Service's slices to show this
// pod's deletion (see Reconcile); a patch of ours at the same moment
// would change this pod twice within milliseconds, which is what costs
// the Service the EndpointSlice controller's one-second retry. So Release
// waits up to grace for the label to go, and only then removes it itself:
// when no successor comes (a single replica, or etcd unreachable), a pod
// that no longer leads still loses the label. A missing pod counts as
// success.
func (l *Labeler) Release(ctx context.Context, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		pod, err := l.pods.Get(ctx, l.cfg.Pod.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err == nil:
			if _, has := pod.Labels[l.cfg.LabelKey]; !has {
				return nil
			}
		}
		if !time.Now().Before(deadline) {
			return l.Unlabel(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("k8s: release label: %w", ctx.Err())
		case <-time.After(min(releasePoll, time.Until(deadline))):
		}
	}
}

// releasePoll is how often Release reads its own pod.
const releasePoll = 50 * time.Millisecond

// patchLabel sets (value != nil) or removes (nil) the label on pod name
// with a JSON merge patch, which touches no other label.
func (l *Labeler) patchLabel(ctx context.Context, name string, value *string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"labels": map[string]*string{l.cfg.LabelKey: value}},
	})
	if err != nil {
		return fmt.Errorf("k8s: encode label patch: %w", err)
	}
	_, err = l.pods.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("k8s: patch pod %s/%s: %w", l.cfg.Pod.Namespace, name, err)
	}
	return nil
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// jitter spreads retries of several pods over ±10 %.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}
