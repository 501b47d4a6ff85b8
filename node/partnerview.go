package node

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/vectis-ft/vectis/store"
)

// partnerView keeps every partner and its password hash in memory, current
// through the store's change notifications, so that a CONNECT needs no
// store call: on SQLite the single connection is busy with the journal of
// every running transfer, and 1,000 CONNECTs queued behind it took seconds
// (issue 17). Until the first load, and whenever it is not current (after
// a failed reload), lookups go to the store.
//
// A change made through the API reaches the view within the notification
// delay (in-process on SQLite, LISTEN/NOTIFY on PostgreSQL, with a full
// reload when the listener reconnects).
type partnerView struct {
	st  *store.Store
	log *slog.Logger

	mu    sync.RWMutex
	ready bool
	byID  map[string]viewPartner
}

type viewPartner struct {
	p    store.Partner
	hash string
}

func newPartnerView(st *store.Store, log *slog.Logger) *partnerView {
	return &partnerView{st: st, log: log, byID: map[string]viewPartner{}}
}

// run subscribes, loads every partner, then applies changes until ctx ends.
// Subscribing first means no change made during the load is missed.
func (v *partnerView) run(ctx context.Context) {
	changes := v.st.Subscribe(ctx)
	v.reloadAll(ctx)
	for ch := range changes {
		switch {
		case ch.Kind == store.KindAll || ch.Op == store.OpResync:
			v.reloadAll(ctx)
		case ch.Kind == store.KindPartner:
			v.reload(ctx, ch.ID)
		}
	}
	v.mu.Lock()
	v.ready = false
	v.mu.Unlock()
}

func (v *partnerView) reloadAll(ctx context.Context) {
	ps, err := v.st.ListPartners(ctx)
	byID := make(map[string]viewPartner, len(ps))
	for _, p := range ps {
		if err != nil {
			break
		}
		var h string
		h, err = v.st.PartnerPasswordHash(ctx, p.ID)
		if errors.Is(err, store.ErrNotFound) {
			err = nil // deleted meanwhile; its change notification follows
			continue
		}
		byID[p.ID] = viewPartner{p: p, hash: h}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		// Serve from the store until a reload succeeds (the next change
		// or resync): a stale view could let a disabled partner in.
		v.ready = false
		if ctx.Err() == nil {
			v.log.Warn("partner view: load failed; partners are read from the store", "err", err)
		}
		return
	}
	v.byID, v.ready = byID, true
}

func (v *partnerView) reload(ctx context.Context, id string) {
	p, err := v.st.GetPartner(ctx, id)
	var h string
	if err == nil {
		h, err = v.st.PartnerPasswordHash(ctx, id)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case errors.Is(err, store.ErrNotFound):
		delete(v.byID, id)
	case err != nil:
		v.ready = false
		if ctx.Err() == nil {
			v.log.Warn("partner view: reload failed; partners are read from the store", "partner", id, "err", err)
		}
	default:
		v.byID[id] = viewPartner{p: p, hash: h}
	}
}

// partner returns the partner and its hash. ok is false when the view is
// not current, or does not hold the partner: the caller reads the store.
// A miss goes to the store because a partner created through another
// node's API must be able to connect as soon as that API answered, before
// its change notification arrives; a miss costs one indexed read and no
// password work, so unknown ids stay cheap.
func (v *partnerView) partner(id string) (p store.Partner, hash string, ok bool, err error) {
	if v == nil {
		return p, "", false, nil
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	if !v.ready {
		return p, "", false, nil
	}
	e, found := v.byID[id]
	if !found {
		return p, "", false, nil
	}
	return e.p, e.hash, true, nil
}
