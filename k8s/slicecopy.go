package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// sliceCopy is a copy of one Service's EndpointSlices, kept current by
// ServiceEndpoints.Watch: the labeller's waits read it instead of listing.
type sliceCopy struct {
	mu     sync.Mutex
	slices map[string][]endpoint // by slice name
	synced bool
	// changed is closed at every change of the copy, then replaced: a wait
	// that found the copy not yet as it wants it blocks on it.
	changed chan struct{}
	// written is when the watch last delivered a write of a slice.
	written time.Time
}

// snapshot returns the endpoints of every slice of the copy, a channel
// closed at its next change, when the watch last delivered a write, and
// whether it is synced (when it is not, eps is empty and means nothing).
func (c *sliceCopy) snapshot() (eps []endpoint, changed <-chan struct{}, written time.Time, synced bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	if c.synced {
		for _, name := range slices.Sorted(maps.Keys(c.slices)) {
			eps = append(eps, c.slices[name]...)
		}
	}
	return eps, c.changed, c.written, c.synced
}

// notifyLocked wakes the waits; c.mu is held.
func (c *sliceCopy) notifyLocked() {
	if c.changed != nil {
		close(c.changed)
	}
	c.changed = make(chan struct{})
}

func (c *sliceCopy) reset(items []slice) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slices = make(map[string][]endpoint, len(items))
	for i := range items {
		c.slices[items[i].Metadata.Name] = items[i].pods()
	}
	c.synced = true
	c.notifyLocked()
}

func (c *sliceCopy) set(sl *slice) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slices[sl.Metadata.Name] = sl.pods()
	c.written = time.Now()
	c.notifyLocked()
}

func (c *sliceCopy) remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.slices, name)
	c.written = time.Now()
	c.notifyLocked()
}

func (c *sliceCopy) unsync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.synced {
		c.synced = false
		c.notifyLocked()
	}
}

// The back-off between two attempts to list and watch the slices.
const (
	sliceWatchMinBackoff = 100 * time.Millisecond
	sliceWatchMaxBackoff = 5 * time.Second
)

// Watch keeps the copy of the Service's slices that the waits read, until
// ctx ends: list, then watch from the list's version, and list again
// whenever the watch ends. Run it for the life of the process (the
// labeller's Watch does), standbys included, so that a new leader's waits
// find it synced. Without the RBAC right to list or watch the slices it
// returns at once an error wrapping ErrCannotReadEndpoints, and waits list
// as before. Otherwise it returns ctx's error.
func (s *ServiceEndpoints) Watch(ctx context.Context) error {
	// Failures other than the right are retried: waits list meanwhile, and
	// report what fails.
	return followList(ctx, sliceWatchMinBackoff, sliceWatchMaxBackoff, s.watchOnce, s.copy.unsync,
		func(err error) bool { return errors.Is(err, ErrCannotReadEndpoints) }, nil)
}

// watchEvent is a watch event of the API's JSON stream.
type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// watchOnce lists the slices and follows them until the watch ends; a nil
// error means the server ended it (its timeout) after it worked.
func (s *ServiceEndpoints) watchOnce(ctx context.Context) error {
	list, err := s.list(ctx)
	if err != nil {
		return err
	}
	body, err := s.client.Get().Namespace(s.namespace).Resource("endpointslices").
		Param("labelSelector", serviceNameLabel+"="+s.service).
		Param("watch", "true").
		Param("resourceVersion", list.Metadata.ResourceVersion).
		Param("allowWatchBookmarks", "true").
		Stream(ctx)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("%w: watch endpointslices of service %s: %w", ErrCannotReadEndpoints, s.service, err)
		}
		return fmt.Errorf("k8s: watch endpointslices of service %s: %w", s.service, err)
	}
	defer body.Close()
	s.copy.reset(list.Items)
	dec := json.NewDecoder(body)
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() == nil {
				return nil
			}
			return fmt.Errorf("k8s: endpointslices watch of service %s: %w", s.service, err)
		}
		switch ev.Type {
		case "ADDED", "MODIFIED", "DELETED":
			var sl slice
			if err := json.Unmarshal(ev.Object, &sl); err != nil {
				return fmt.Errorf("k8s: decode endpointslice event: %w", err)
			}
			if ev.Type == "DELETED" {
				s.copy.remove(sl.Metadata.Name)
			} else {
				s.copy.set(&sl)
			}
		case "ERROR":
			// Typically 410 Gone: the version is too old; list again.
			return fmt.Errorf("k8s: endpointslices watch of service %s: %s", s.service, ev.Object)
		}
	}
}
