package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/election"
	"github.com/vectis-ft/vectis/store"
)

// Leftovers are the transfers no session will finish (issue 16, defect 8):
// the leader fails those interrupted for longer than
// store.interruptedExpiry, an operator may cancel them at any time, and in
// both cases their partial file is deleted, so that a partner that never
// comes back does not hold disk space forever.

// leftoverMetrics are the leader's view of partial files.
type leftoverMetrics struct {
	partialBytes prometheus.Gauge
	expired      prometheus.Counter
}

func newLeftoverMetrics(reg prometheus.Registerer) (*leftoverMetrics, error) {
	m := &leftoverMetrics{
		partialBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vectis_transfer_partial_bytes",
			Help: "Bytes held in the partial files of unfinished receives (reported by the leader; 0 on standbys).",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_transfer_expired_total",
			Help: "Interrupted transfers failed by store.interruptedExpiry, their partial files deleted.",
		}),
	}
	for _, c := range []prometheus.Collector{m.partialBytes, m.expired} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register leftover metrics: %w", err)
		}
	}
	return m, nil
}

// goneFunc is the orphan test of the term: see ownerGone. A transfer owned
// by this very term is never gone: its session runs here, or has just ended.
func (n *node) goneFunc(ctx context.Context, epoch int64) (func(store.Transfer) bool, error) {
	var members []election.MemberInfo
	if n.loop != nil {
		var err error
		if members, err = n.loop.Members(ctx); err != nil {
			return nil, fmt.Errorf("list members: %w", err)
		}
	}
	gone := ownerGone(n.cfg.Node.Name, epoch, n.loop == nil, members)
	self := n.cfg.Node.Name
	return func(t store.Transfer) bool {
		if t.Node == self && t.Epoch == epoch {
			return false
		}
		return gone(t)
	}, nil
}

// expireLeftovers fails the transfers interrupted for too long and deletes
// their partial files; leader-only.
func (n *node) expireLeftovers(ctx context.Context, epoch int64) {
	if n.cfg.Store.InterruptedExpiry <= 0 {
		return
	}
	out, err := n.st.ExpireInterrupted(ctx, epoch, n.cfg.Node.Name, n.cfg.Store.InterruptedExpiry)
	if err != nil && ctx.Err() == nil {
		n.log.Warn("interrupted transfer expiry", "err", err)
	}
	for _, t := range out {
		n.leftovers.expired.Inc()
		n.log.Warn("interrupted transfer expired; its partial file is deleted", "transfer", t.ID, "partner", t.PartnerID,
			"file", t.FileID, "partial", t.TempPath, "diag", t.Diagnostic)
		n.removePartial(t)
	}
}

// removePartial deletes the partial file of a transfer that ended without
// completing. A path outside the file root is left alone: the record may
// have been written by a configuration since narrowed.
func (n *node) removePartial(t store.Transfer) {
	if t.TempPath == "" {
		return
	}
	if err := n.roots.Check(t.TempPath); err != nil {
		n.log.Warn("partial file left in place", "transfer", t.ID, "partial", t.TempPath, "err", err)
		return
	}
	if err := os.Remove(t.TempPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		n.log.Warn("delete partial file", "transfer", t.ID, "partial", t.TempPath, "err", err)
	}
}

// measurePartials sets vectis_transfer_partial_bytes from the files on
// disk: a partial file may hold more than the last sync point.
func (n *node) measurePartials(ctx context.Context) {
	ts, err := n.st.PartialFiles(ctx)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Debug("partial files", "err", err)
		}
		return
	}
	var total int64
	for _, t := range ts {
		if fi, err := os.Stat(t.TempPath); err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
	}
	n.leftovers.partialBytes.Set(float64(total))
}

// transferCanceller is the API's TransferCanceller: a live session is
// interrupted by the PeSIT manager, anything else is cancelled in the store
// by the leader, and its partial file deleted.
type transferCanceller struct{ n *node }

func (c transferCanceller) Cancel(ctx context.Context, id string) (bool, error) {
	return c.n.pesit.Cancel(ctx, id)
}

func (c transferCanceller) CancelResting(ctx context.Context, id string) (store.Transfer, error) {
	epoch := c.n.pesit.epoch.Load()
	if epoch == 0 {
		return store.Transfer{}, fmt.Errorf("cancel transfer %s: %w: this node does not lead", id, store.ErrStaleEpoch)
	}
	gone, err := c.n.goneFunc(ctx, epoch)
	if err != nil {
		return store.Transfer{}, fmt.Errorf("cancel transfer %s: %w: %w", id, store.ErrUnavailable, err)
	}
	t, err := c.n.st.CancelResting(ctx, epoch, c.n.cfg.Node.Name, id, gone)
	if err != nil {
		return store.Transfer{}, err
	}
	c.n.removePartial(t)
	c.n.log.Info("transfer without a session cancelled", "transfer", t.ID, "partner", t.PartnerID, "partial", t.TempPath)
	return t, nil
}
