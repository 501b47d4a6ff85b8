package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// viewRetry is how long a view that failed to load waits before loading
// again; lookups go to the store meanwhile.
const viewRetry = time.Second

// catalogView keeps one kind of catalog entry (partners, virtual files) in
// memory, current through the store's change events, so that the lookups
// of a CONNECT and a CREATE or SELECT need no store call: on SQLite the
// writer is busy with the journal of every running transfer, and 1,000
// CONNECTs queued behind it took seconds (issue 17).
//
// It never serves a definition older than a change committed through this
// node's store: while the view has not applied every event up to
// store.Seq(), which the store advances before the call that made the
// change returns, lookups go to the store. They go to the store as well
// until the first load, after a failed load (retried every viewRetry), and
// for an id the view does not hold: an entry created through another
// node's API (PostgreSQL) must be usable as soon as that API answered, and
// a miss costs one indexed read. An update made through another node
// reaches the view with its notification (LISTEN/NOTIFY, with a full
// reload when the listener reconnects); until then this node serves the
// definition it had, as it would from a store read made a moment earlier.
type catalogView[T any] struct {
	name string // for logs
	kind store.ChangeKind
	st   *store.Store
	log  *slog.Logger
	// loadAll reads every entry, by id.
	loadAll func(ctx context.Context) (map[string]T, error)
	// load reads one entry; store.ErrNotFound removes it from the view.
	load func(ctx context.Context, id string) (T, error)

	mu    sync.RWMutex
	ready bool
	// applied is the store Seq up to which the view holds every change
	// committed through the store.
	applied int64
	byID    map[string]T
}

// run subscribes, loads every entry, then applies changes until ctx ends.
// Subscribing first means no change made during the load is missed.
func (v *catalogView[T]) run(ctx context.Context) {
	events := v.st.Watch(ctx)
	retry := time.NewTimer(viewRetry)
	retry.Stop()
	defer retry.Stop()
	if !v.reloadAll(ctx) {
		retry.Reset(viewRetry)
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				v.mu.Lock()
				v.ready = false
				v.mu.Unlock()
				return
			}
			if !v.apply(ctx, ev) {
				retry.Reset(viewRetry)
			}
		case <-retry.C:
			if !v.reloadAll(ctx) {
				retry.Reset(viewRetry)
			}
		}
	}
}

// apply brings the view up to ev; false when a load failed and the view
// is no longer current.
func (v *catalogView[T]) apply(ctx context.Context, ev store.Event) bool {
	v.mu.RLock()
	ready := v.ready
	v.mu.RUnlock()
	switch {
	case ev.Kind == store.KindAll || ev.Op == store.OpResync:
		return v.reloadAll(ctx)
	case !ready:
		// The retry's full load, armed when the view stopped being
		// current, covers this change; resetting the timer here would
		// put it off for as long as changes keep coming.
		return true
	case ev.Kind == v.kind:
		return v.reload(ctx, ev.ID, ev.Seq)
	}
	v.mu.Lock()
	v.applied = max(v.applied, ev.Seq)
	v.mu.Unlock()
	return true
}

func (v *catalogView[T]) reloadAll(ctx context.Context) bool {
	// Read before the load, which then sees every change up to it.
	seq := v.st.Seq()
	all, err := v.loadAll(ctx)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		// Serve from the store until a load succeeds: a stale view could
		// let a disabled partner in, or deliver to a moved directory.
		v.ready = false
		if ctx.Err() == nil {
			v.log.Warn(v.name+" view: load failed; read from the store", "err", err, "retry", viewRetry)
		}
		return false
	}
	v.byID, v.ready = all, true
	v.applied = max(v.applied, seq)
	return true
}

func (v *catalogView[T]) reload(ctx context.Context, id string, seq int64) bool {
	e, err := v.load(ctx, id)
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case errors.Is(err, store.ErrNotFound):
		delete(v.byID, id)
	case err != nil:
		v.ready = false
		if ctx.Err() == nil {
			v.log.Warn(v.name+" view: reload failed; read from the store", "id", id, "err", err, "retry", viewRetry)
		}
		return false
	default:
		v.byID[id] = e
	}
	v.applied = max(v.applied, seq)
	return true
}

// get returns the entry held for id. ok is false when the view is not
// current or does not hold id: the caller reads the store.
func (v *catalogView[T]) get(id string) (e T, ok bool) {
	if v == nil {
		return e, false
	}
	// Read before the view's state: a change whose Seq is not yet applied
	// sends this lookup to the store.
	seq := v.st.Seq()
	v.mu.RLock()
	defer v.mu.RUnlock()
	if !v.ready || v.applied < seq {
		return e, false
	}
	e, ok = v.byID[id]
	return e, ok
}

// viewPartner is a partner with its password hash.
type viewPartner struct {
	p    store.Partner
	hash string
}

func newPartnerView(st *store.Store, log *slog.Logger) *catalogView[viewPartner] {
	return &catalogView[viewPartner]{
		name: "partner", kind: store.KindPartner, st: st, log: log,
		loadAll: func(ctx context.Context) (map[string]viewPartner, error) {
			ps, err := st.ListPartners(ctx)
			if err != nil {
				return nil, err
			}
			out := make(map[string]viewPartner, len(ps))
			for _, p := range ps {
				h, err := st.PartnerPasswordHash(ctx, p.ID)
				if errors.Is(err, store.ErrNotFound) {
					continue // deleted meanwhile; its change event follows
				}
				if err != nil {
					return nil, fmt.Errorf("partner %s: %w", p.ID, err)
				}
				out[p.ID] = viewPartner{p: p, hash: h}
			}
			return out, nil
		},
		load: func(ctx context.Context, id string) (viewPartner, error) {
			p, err := st.GetPartner(ctx, id)
			if err != nil {
				return viewPartner{}, err
			}
			h, err := st.PartnerPasswordHash(ctx, id)
			return viewPartner{p: p, hash: h}, err
		},
	}
}

func newFileView(st *store.Store, log *slog.Logger) *catalogView[store.VirtualFile] {
	return &catalogView[store.VirtualFile]{
		name: "virtual file", kind: store.KindFile, st: st, log: log,
		loadAll: func(ctx context.Context) (map[string]store.VirtualFile, error) {
			fs, err := st.ListFiles(ctx)
			if err != nil {
				return nil, err
			}
			out := make(map[string]store.VirtualFile, len(fs))
			for _, f := range fs {
				out[f.ID] = f
			}
			return out, nil
		},
		load: st.GetFile,
	}
}
