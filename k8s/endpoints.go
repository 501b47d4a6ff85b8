package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// serviceNameLabel is the label the EndpointSlice controller puts on every
// slice it writes for a Service (discovery.k8s.io/v1 LabelServiceName).
const serviceNameLabel = "kubernetes.io/service-name"

// endpointsPollInterval is how often a wait lists the slices when no
// watched copy of them is synced (ServiceEndpoints.Watch not running, or no
// RBAC right to watch). A wait lasts at most the labeller's SettleTimeout
// (300 ms), so a handover then costs the API server about fifteen small
// lists.
const endpointsPollInterval = 20 * time.Millisecond

// ErrCannotReadEndpoints means the service account may not list
// EndpointSlices: the labeller then does not wait for them.
var ErrCannotReadEndpoints = errors.New("k8s: no RBAC right to list endpointslices")

// ServiceEndpoints reads which pods the EndpointSlices of one Service list.
//
// Why the labeller waits on them: the EndpointSlice controller refuses to
// sync a Service while its informer has not yet seen its own last write of
// that Service's slices ("EndpointSlice informer cache is out of date"), and
// retries after a back-off that starts at one second. A handover changes
// two pods within milliseconds, the old leader's label stripped and the new
// one's set. When the second change reaches the controller inside that
// window, the Service routes to nobody for a second more. Labelling only
// once the slices list no other pod (the stripped one, or one deleted
// outright) puts the last change after the controller's own write was
// observed; on a graceful handover, stripping only once the slices mark
// the deleted pod terminating does the same for the first. Measured on
// kind: docs/kubernetes.md.
//
// A wait reads a copy of the slices kept by Watch when it runs: it sees the
// controller's write as soon as the watch delivers it, instead of at the
// next poll and after a list (on kind, the two waits of a graceful handover
// took 37 to 83 ms each, for writes that kubectl's watch showed 20 to 45 ms
// sooner).
type ServiceEndpoints struct {
	client    rest.Interface
	namespace string
	service   string
	copy      sliceCopy
}

// NewServiceEndpoints reads the slices of Service service in namespace.
// Only the endpoints' pod references are decoded, from JSON, so that no
// typed API group is linked into the binary for them.
func NewServiceEndpoints(cfg *rest.Config, namespace, service string) (*ServiceEndpoints, error) {
	if service == "" || namespace == "" {
		return nil, errors.New("k8s: service endpoints: empty service or namespace")
	}
	c := metadata.ConfigFor(cfg) // a codec for the API's Status errors
	c.AcceptContentTypes = "application/json"
	c.ContentType = "application/json"
	c.GroupVersion = &schema.GroupVersion{Group: "discovery.k8s.io", Version: "v1"}
	c.APIPath = "/apis"
	// client-go's default of 5 requests a second (burst 10), or whatever
	// rate the pods' client was given, would stretch a wait's later polls
	// to 200 ms apart: this client always allows the poll's own rate.
	c.RateLimiter = nil
	pollRate := int(time.Second / endpointsPollInterval)
	c.QPS, c.Burst = float32(pollRate), pollRate
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("k8s: endpointslices client: %w", err)
	}
	return &ServiceEndpoints{client: rc, namespace: namespace, service: service}, nil
}

// Service is the name of the Service whose slices are read.
func (s *ServiceEndpoints) Service() string { return s.service }

// AwaitOnly returns once no slice of the Service lists a pod other than
// pod as an endpoint (pod itself may be listed or not), or ctx's error.
// Without the RBAC right to list slices it returns an error wrapping
// ErrCannotReadEndpoints at once.
func (s *ServiceEndpoints) AwaitOnly(ctx context.Context, pod string) error {
	return s.await(ctx, func(eps []endpoint) bool {
		for _, ep := range eps {
			if ep.pod != pod {
				return false
			}
		}
		return true
	})
}

// AwaitTerminating returns once every slice of the Service that lists one
// of pods marks it terminating, that is once the controller has written
// the pods' deletion, or ctx's error (ErrCannotReadEndpoints as for
// AwaitOnly).
func (s *ServiceEndpoints) AwaitTerminating(ctx context.Context, pods []string) error {
	set := setOf(pods)
	return s.await(ctx, func(eps []endpoint) bool {
		for _, ep := range eps {
			if set[ep.pod] && !ep.terminating {
				return false
			}
		}
		return true
	})
}

// informerCatchUp is how long a wait that read the watched copy lets pass
// after the controller's last write of the slices before it returns. The
// copy can show that write before the controller's own informer does, and
// a pod change that reaches the controller in between is the stale-cache
// case that costs the Service a second (see ServiceEndpoints). On kind,
// strips made right on the watch's delivery of the "terminating" write
// left the old leader in the slices until the settle timeout; polling had
// the margin of its period and its list.
const informerCatchUp = 30 * time.Millisecond

// await returns once done accepts the Service's endpoints: as the watched
// copy shows them whenever it is synced (and informerCatchUp after the
// last write it saw), else as a list every endpointsPollInterval shows
// them.
func (s *ServiceEndpoints) await(ctx context.Context, done func([]endpoint) bool) error {
	tick := time.NewTicker(endpointsPollInterval)
	defer tick.Stop()
	for {
		eps, changed, written, synced := s.copy.snapshot()
		if !synced {
			var err error
			if eps, err = s.endpoints(ctx); err != nil {
				return err
			}
		}
		var (
			next  <-chan time.Time
			timer *time.Timer
		)
		switch {
		case !done(eps):
			if !synced {
				next = tick.C
			}
		case !synced:
			return nil
		default:
			settle := informerCatchUp - time.Since(written)
			if settle <= 0 {
				return nil
			}
			timer = time.NewTimer(settle)
			next = timer.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-next:
		}
		if timer != nil {
			timer.Stop()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// sliceList is the part of a discovery.k8s.io/v1 EndpointSliceList read
// here.
type sliceList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Items []slice `json:"items"`
}

// slice is the part of a discovery.k8s.io/v1 EndpointSlice read here.
type slice struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Endpoints []struct {
		Conditions struct {
			Terminating *bool `json:"terminating"`
		} `json:"conditions"`
		TargetRef *struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"targetRef"`
	} `json:"endpoints"`
}

// pods returns the pods the slice lists as endpoints.
func (sl *slice) pods() []endpoint {
	var eps []endpoint
	for _, ep := range sl.Endpoints {
		if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
			t := ep.Conditions.Terminating
			eps = append(eps, endpoint{pod: ep.TargetRef.Name, terminating: t != nil && *t})
		}
	}
	return eps
}

// endpoint is one pod listed by a slice, ready or not.
type endpoint struct {
	pod         string
	terminating bool
}

// endpoints lists the pods that the Service's slices list as endpoints,
// ready or not: a listed pod, even one marked not ready or terminating,
// means the controller has not yet written the slices without it.
func (s *ServiceEndpoints) endpoints(ctx context.Context) ([]endpoint, error) {
	list, err := s.list(ctx)
	if err != nil {
		return nil, err
	}
	var eps []endpoint
	for i := range list.Items {
		eps = append(eps, list.Items[i].pods()...)
	}
	return eps, nil
}

// list lists the Service's slices.
func (s *ServiceEndpoints) list(ctx context.Context) (*sliceList, error) {
	raw, err := s.client.Get().Namespace(s.namespace).Resource("endpointslices").
		Param("labelSelector", serviceNameLabel+"="+s.service).DoRaw(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("%w: list endpointslices of service %s: %w", ErrCannotReadEndpoints, s.service, err)
		}
		return nil, fmt.Errorf("k8s: list endpointslices of service %s: %w", s.service, err)
	}
	var list sliceList
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("k8s: decode endpointslices of service %s: %w", s.service, err)
	}
	return &list, nil
}

func setOf(names []string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return set
}
