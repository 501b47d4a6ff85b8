package node

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/vectis-ft/vectis/internal/credential"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
)

// partnerPasswords checks PeSIT partner passwords through the node's one
// credential.Verifier, which the admin API shares: the bound on concurrent
// argon2id derivations holds for the whole process.
type partnerPasswords struct {
	dir directory
	v   *credential.Verifier
}

// CheckPassword implements server.PasswordChecker. The stored hash is read
// (from the partner view) here rather than captured by the directory, so
// that a partner edited since its lookup is checked against its current
// hash; an unknown partner (or one without a password) derives the dummy
// hash at the same cost.
func (pp partnerPasswords) CheckPassword(ctx context.Context, r server.PasswordRequest) server.PasswordVerdict {
	hash := ""
	if r.Known {
		_, h, err := pp.dir.partner(ctx, r.Partner)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return server.PasswordBusy // the store is down: try later, not "wrong password"
		}
		hash = h
	}
	derived := false // OnDerived runs only for a derivation, not a cache hit
	onDerived := func(ok bool) {
		derived = true
		if r.OnDerived != nil {
			r.OnDerived(ok)
		}
	}
	res, err := pp.v.VerifyWith(ctx, credential.RealmPeSIT, "partner:"+r.Partner, hash, r.Password,
		credential.Hooks{Turn: r.Turn, Gate: r.Gate, OnDerived: onDerived})
	switch {
	case errors.Is(err, credential.ErrBusy):
		return server.PasswordBusy
	case err != nil:
		return server.PasswordRejected
	case res == credential.Throttled:
		return server.PasswordThrottled
	case res == credential.Accepted && !derived:
		return server.PasswordCached
	case res == credential.Accepted:
		return server.PasswordAccepted
	}
	return server.PasswordRejected
}

// auditTimeout bounds the audit write of one login.
const auditTimeout = 2 * time.Second

// auditLogin records a PeSIT password login in the store's audit log:
// every failure that cost a derivation, and every success that needed one
// (the server does not report cached or throttled logins, so a guesser
// cannot flood the log faster than the throttle lets it guess).
func auditLogin(st *store.Store, log *slog.Logger) func(context.Context, server.LoginEvent) {
	return func(ctx context.Context, ev server.LoginEvent) {
		outcome, detail := store.OutcomeSuccess, "client "+ev.Address
		if !ev.OK {
			outcome, detail = store.OutcomeFailure, detail+": "+ev.Reason
			log.WarnContext(ctx, "pesit login failed", "requester", ev.Partner, "client", ev.Address, "reason", ev.Reason)
		}
		actor := ev.Partner
		if actor == "" || len(actor) > 64 || strings.ContainsFunc(actor, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			actor = "(invalid id)"
		}
		// The CONNECT waits for this write: bound it, so that a slow
		// database delays a login by seconds at most.
		ctx, cancel := context.WithTimeout(ctx, auditTimeout)
		defer cancel()
		if _, err := st.AppendAudit(ctx, store.AuditEvent{Actor: actor, Action: "pesit.auth", Target: ev.ServerID, Outcome: outcome, Detail: detail}); err != nil {
			log.WarnContext(ctx, "pesit login audit failed", "err", err)
		}
	}
}
