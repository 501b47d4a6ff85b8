//go:build e2e

package e2e

import (
	"context"
	"sort"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// store is a tiny list-and-watch cache of one kind of object in one
// namespace. (client-go's informers would do; their package pulls a module
// that go.sum does not carry.)
type store[T any, PT interface {
	*T
	metav1.Object
}] struct {
	list     func(ctx context.Context, o metav1.ListOptions) ([]T, string, error)
	watch    func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)
	onChange func()

	mu     sync.RWMutex
	items  map[string]PT
	synced chan struct{}
	once   sync.Once
}

func newStore[T any, PT interface {
	*T
	metav1.Object
}](list func(context.Context, metav1.ListOptions) ([]T, string, error), w func(context.Context, metav1.ListOptions) (watch.Interface, error), onChange func()) *store[T, PT] {
	if onChange == nil {
		onChange = func() {}
	}
	return &store[T, PT]{list: list, watch: w, onChange: onChange, items: map[string]PT{}, synced: make(chan struct{})}
}

// run keeps the cache current until ctx ends: list, then watch from the
// list's resource version, again from the start on any error.
func (s *store[T, PT]) run(ctx context.Context) {
	for ctx.Err() == nil {
		items, rv, err := s.list(ctx, metav1.ListOptions{})
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		m := make(map[string]PT, len(items))
		for i := range items {
			p := PT(&items[i])
			m[p.GetName()] = p
		}
		s.mu.Lock()
		s.items = m
		s.mu.Unlock()
		s.once.Do(func() { close(s.synced) })
		s.onChange()
		s.follow(ctx, rv)
	}
}

func (s *store[T, PT]) follow(ctx context.Context, rv string) {
	w, err := s.watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
	if err != nil {
		sleepCtx(ctx, 200*time.Millisecond)
		return
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if p, ok := ev.Object.(PT); ok {
					s.mu.Lock()
					s.items[p.GetName()] = p
					s.mu.Unlock()
				}
			case watch.Deleted:
				if p, ok := ev.Object.(PT); ok {
					s.mu.Lock()
					if cur, ok := s.items[p.GetName()]; ok && cur.GetUID() == p.GetUID() {
						delete(s.items, p.GetName())
					}
					s.mu.Unlock()
				}
			case watch.Error:
				return
			default:
				continue
			}
			s.onChange()
		}
	}
}

// waitSynced waits for the first list.
func (s *store[T, PT]) waitSynced(ctx context.Context) error {
	select {
	case <-s.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// all returns the cached objects sorted by name (shared: do not modify).
func (s *store[T, PT]) all() []PT {
	s.mu.RLock()
	out := make([]PT, 0, len(s.items))
	for _, p := range s.items {
		out = append(out, p)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
