package node

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/internal/credential"
	"github.com/vectis-ft/vectis/store"
)

// credentialPrimer pins (credential.Verifier.Pin) the passwords of the
// partners declared in plain text in this node's configuration, on every
// node, standbys included. Without it, the first CONNECT of each partner
// on a new leader pays an argon2id derivation (about 18 ms of CPU alone,
// several times that on a busy node) inside the failover, because a standby
// never verified anything. The node holds these passwords anyway; partners
// declared with passwordHash, or created through the API, are verified at
// their first CONNECT as before.
type credentialPrimer struct {
	st        *store.Store
	v         *credential.Verifier
	passwords map[string]string // partner id -> declared plaintext
	log       *slog.Logger

	mu      sync.Mutex
	pending map[string]bool
	wake    chan struct{}
}

func newCredentialPrimer(st *store.Store, v *credential.Verifier, partners []config.Partner, log *slog.Logger) *credentialPrimer {
	p := &credentialPrimer{
		st: st, v: v, log: log,
		passwords: map[string]string{},
		pending:   map[string]bool{},
		wake:      make(chan struct{}, 1),
	}
	for _, d := range partners {
		if d.Password != "" {
			p.passwords[d.ID] = d.Password
			p.pending[d.ID] = true
		}
	}
	return p
}

// changed queues partner id to be pinned again: a change unpins it
// (Verifier.Forget). It never blocks.
func (p *credentialPrimer) changed(id string) {
	if _, ok := p.passwords[id]; !ok {
		return
	}
	p.mu.Lock()
	p.pending[id] = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// primeRetry is how long a pin that failed (store unreachable, derivation
// slots busy) waits before it is tried again.
const primeRetry = 5 * time.Second

// run pins the declared passwords, then each one again after its partner
// changed, until ctx ends. One pin at a time: they share the derivation
// slots with the logins, which must not wait behind a batch of them.
func (p *credentialPrimer) run(ctx context.Context) {
	if len(p.passwords) == 0 {
		return
	}
	var retry <-chan time.Time // set while a pin waits to be tried again
	for {
		p.mu.Lock()
		ids := slices.Collect(maps.Keys(p.pending))
		clear(p.pending)
		p.mu.Unlock()
		for _, id := range ids {
			err := p.pin(ctx, id)
			switch {
			case ctx.Err() != nil:
				return
			case err == nil:
			case errors.Is(err, credential.ErrPinMismatch):
				// The stored password is no longer the declared one: the
				// next change of the partner tries again.
				p.log.Debug("declared partner password not pinned", "partner", id, "err", err)
			default:
				p.log.Debug("declared partner password not pinned; retrying", "partner", id, "err", err, "in", primeRetry)
				p.mu.Lock()
				p.pending[id] = true // no wake-up: the retry's timer runs it
				p.mu.Unlock()
				retry = time.After(primeRetry)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
			retry = nil
		case <-p.wake:
		}
	}
}

// pin reads the partner's stored hash from the store itself (a view may
// not have followed a change made through another node yet) and pins its
// declared password against it. A partner deleted, or stored without a
// password, has nothing to pin.
func (p *credentialPrimer) pin(ctx context.Context, id string) error {
	hash, err := p.st.PartnerPasswordHash(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound) || (err == nil && hash == ""):
		return nil
	case err != nil:
		return err
	}
	return p.v.Pin(ctx, "partner:"+id, hash, p.passwords[id])
}
