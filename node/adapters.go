package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vectis-ft/vectis/internal/credential"
	"github.com/vectis-ft/vectis/internal/fileroot"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
)

// directory serves partners and virtual files to the PeSIT servers from
// in-memory views of the store, so that an API change applies to the next
// CONNECT or CREATE without a restart, and a lookup waits for no store
// call (catalogview.go).
type directory struct {
	st *store.Store
	v  *credential.Verifier // bounds the derivations; see credentials.go
	// partners and files are the views; nil or not current: the store.
	partners *catalogView[viewPartner]
	files    *catalogView[store.VirtualFile]
	// root confines the directories of virtual files, including those
	// stored before vectis.fileRoot existed.
	root fileroot.Root
}

// partner reads a partner and its password hash from the view, or from the
// store when the view is not current.
func (d directory) partner(ctx context.Context, id string) (store.Partner, string, error) {
	if e, ok := d.partners.get(id); ok {
		return e.p, e.hash, nil
	}
	p, err := d.st.GetPartner(ctx, id)
	if err != nil {
		return p, "", err
	}
	hash, err := d.st.PartnerPasswordHash(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return p, "", err
	}
	return p, hash, nil
}

func (d directory) Partner(ctx context.Context, id string) (server.Partner, error) {
	p, hash, err := d.partner(ctx, id)
	if err != nil {
		return server.Partner{}, storeErr(err)
	}
	var verify func(string) bool
	if hash != "" {
		// The server checks passwords through partnerPasswords; this is
		// for callers without one, bounded all the same.
		verify = func(password string) bool {
			res, err := d.v.Verify(context.Background(), credential.RealmPeSIT, "partner:"+id, hash, password, nil, nil)
			return err == nil && res == credential.Accepted
		}
	}
	return serverPartner(p, verify), nil
}

// serverPartner is the one projection of a stored partner onto the PeSIT
// server's; TestPartnerProjections fails when a field is not carried.
func serverPartner(p store.Partner, verifyPassword func(string) bool) server.Partner {
	sp := server.Partner{
		ID:           p.ID,
		Enabled:      p.Enabled,
		Access:       partnerAccess(p.Access),
		Files:        p.Files,
		MaxSessions:  p.MaxSessions,
		CertCN:       p.CertCN,
		MultiArticle: p.MultiArticle,
		Segmented:    p.Segment,
		Strict:       p.Strict,
	}
	for _, fp := range p.CertSHA256 {
		sp.CertFingerprints = append(sp.CertFingerprints, strings.ToLower(fp))
	}
	sp.VerifyPassword = verifyPassword
	return sp
}

// file reads a virtual file from the view, or from the store when the
// view is not current or does not hold it.
func (d directory) file(ctx context.Context, id string) (store.VirtualFile, error) {
	if f, ok := d.files.get(id); ok {
		return f, nil
	}
	return d.st.GetFile(ctx, id)
}

func (d directory) VirtualFile(ctx context.Context, id string) (server.VirtualFile, error) {
	f, err := d.file(ctx, id)
	if err != nil {
		return server.VirtualFile{}, storeErr(err)
	}
	for _, dir := range []string{f.ReceiveDir, f.SendDir} {
		if dir == "" {
			continue
		}
		if err := d.root.Check(dir); err != nil {
			return server.VirtualFile{}, fmt.Errorf("virtual file %s: %w", id, err)
		}
	}
	vf := server.VirtualFile{
		ID:           f.ID,
		Direction:    fileDirection(f.Direction),
		ReceiveDir:   f.ReceiveDir,
		NamePattern:  f.NamePattern,
		SendDir:      f.SendDir,
		Overwrite:    f.Overwrite,
		MaxSize:      f.MaxSize,
		RecordLength: f.RecordLength,
		DataCode:     2,
	}
	if f.RecordFormat == store.RecordVariable {
		vf.RecordFormat = server.RecordVariable
	}
	switch f.DataCode {
	case store.DataASCII:
		vf.DataCode = 0
	case store.DataEBCDIC:
		vf.DataCode = 1
	}
	return vf, nil
}

func storeErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", server.ErrNotFound, err)
	}
	return err
}

func partnerAccess(a store.Access) server.Access {
	switch a {
	case store.AccessRead:
		return server.AccessRead
	case store.AccessWrite:
		return server.AccessWrite
	case store.AccessBoth:
		return server.AccessBoth
	}
	return server.AccessNone
}

func fileDirection(d store.FileDirection) server.Direction {
	switch d {
	case store.FileReceive:
		return server.DirectionReceive
	case store.FileSend:
		return server.DirectionSend
	}
	return server.DirectionBoth
}

// journal records transfers in the store. A transfer belongs to the term
// that began it (or took it over on a restart): its sync points and outcome
// carry that term's epoch, not the current one, so that a node that stepped
// down may finish the transfers it owns while it drains, and is refused
// (store.ErrNotOwner) once a newer term took one over. Beginning or taking
// over a transfer is leader-only and carries the current epoch.
// The PeSIT server holds each transfer by a server.TransferRef: the store's
// id, and the owner epoch the journal's writes for it carry. The journal
// keeps nothing per transfer: a leader serving for months holds no more
// here than on its first day.
type journal struct {
	st      *store.Store
	node    string
	epoch   func() int64
	onStale func(error)
}

func newJournal(st *store.Store, node string, epoch func() int64, onStale func(error)) *journal {
	return &journal{st: st, node: node, epoch: epoch, onStale: onStale}
}

// check passes err on, and reports a stale epoch to the HA loop: another
// leader has been elected and this node must stop serving. A lost transfer
// (ErrNotOwner) is not such a report: it is passed on as
// server.ErrTransferLost, on which the session ends that transfer and
// leaves its file to the new owner.
func (j *journal) check(err error) error {
	if errors.Is(err, store.ErrStaleEpoch) && j.onStale != nil {
		j.onStale(err)
	}
	if errors.Is(err, store.ErrNotOwner) {
		return fmt.Errorf("%w: %w", server.ErrTransferLost, err)
	}
	return err
}

func transferDirection(t server.Transfer) store.TransferDirection {
	switch {
	case t.Message:
		return store.DirMessage
	case t.Direction == server.DirectionSend:
		return store.DirSend
	}
	return store.DirReceive
}

func (j *journal) Begin(ctx context.Context, t server.Transfer) (server.TransferRef, error) {
	epoch := j.epoch()
	if from := t.RestartOf; from.ID != "" {
		// Take the transfer over from the owner FindRestart saw. A
		// compare-and-set: from now on the old owner's writes are refused.
		_, err := j.st.TakeOverTransfer(ctx, epoch, j.node, from.ID, from.Owner)
		if err == nil {
			return server.TransferRef{ID: from.ID, Owner: epoch}, nil
		}
		if errors.Is(err, store.ErrStaleEpoch) || errors.Is(err, store.ErrNotOwner) {
			// Another session took it first: resuming into the same
			// file would race it.
			return server.TransferRef{}, j.check(fmt.Errorf("take over transfer: %w", err))
		}
	}
	rec, err := j.st.CreateTransfer(ctx, epoch, store.Transfer{
		ServerID:    t.ServerID,
		PartnerID:   t.Partner,
		FileID:      t.VirtualFile,
		Direction:   transferDirection(t),
		PesitID:     int64(t.PeSITID),
		Status:      store.StatusInProgress,
		LocalPath:   t.Path,
		TempPath:    t.TempPath,
		Node:        j.node,
		FileCreated: t.FileCreated,
	})
	if err != nil {
		return server.TransferRef{}, j.check(fmt.Errorf("record transfer: %w", err))
	}
	return server.TransferRef{ID: rec.ID, Owner: rec.Epoch}, nil
}

func (j *journal) SyncPoint(ctx context.Context, ref server.TransferRef, sync uint32, offset, articles int64) error {
	err := j.st.RecordSyncPoint(ctx, ref.Owner, ref.ID, store.SyncPoint{Number: int64(sync), Offset: offset, Articles: articles})
	return j.check(err)
}

// SyncPointDeferred records a point that the receiving server made durable
// with its data (the file's restart index, pesit/server/restartindex.go):
// the store need not flush it.
func (j *journal) SyncPointDeferred(ctx context.Context, ref server.TransferRef, sync uint32, offset, articles int64) error {
	err := j.st.RecordSyncPointDeferred(ctx, ref.Owner, ref.ID, store.SyncPoint{Number: int64(sync), Offset: offset, Articles: articles})
	return j.check(err)
}

var _ server.DeferredJournal = (*journal)(nil)

func (j *journal) Finish(ctx context.Context, ref server.TransferRef, o server.Outcome) error {
	status := store.StatusFailed
	switch o.Status {
	case server.StatusDone:
		status = store.StatusCompleted
	case server.StatusInterrupted:
		// Kept for a restart, as the orphan sweep leaves a transfer.
		status = store.StatusInterrupted
	case server.StatusCancelled:
		status = store.StatusCancelled
	}
	diag := ""
	if !o.Diagnostic.OK() || status != store.StatusCompleted {
		diag = o.Diagnostic.String()
		if o.Detail != "" {
			diag += " " + o.Detail
		}
	}
	err := j.st.FinishTransfer(ctx, ref.Owner, ref.ID, store.TransferResult{
		Status: status, Bytes: o.Bytes, Articles: o.Articles, SHA256: o.SHA256, Diagnostic: diag,
		Anomalies: anomalyNames(o.Anomalies),
	})
	return j.check(err)
}

func anomalyNames(as []server.Anomaly) []string {
	var out []string
	for _, a := range as {
		out = append(out, string(a))
	}
	return out
}

// completedRestartWindow is how long after its end the restart of a
// transfer recorded completed is recognised as such. A requester restarts
// within minutes or hours; the bound keeps a PI 13 the partner reuses much
// later (it has 24 bits) from matching an old transfer.
const completedRestartWindow = 24 * time.Hour

func (j *journal) FindRestart(ctx context.Context, key server.RestartKey) (server.RestartState, bool, error) {
	dir := store.DirReceive
	if key.Direction == server.DirectionSend {
		dir = store.DirSend
	}
	k := store.RestartKey{PartnerID: key.Partner, Direction: dir, PesitID: int64(key.PeSITID), FileID: key.File}
	rec, err := j.st.FindRestartable(ctx, k)
	if errors.Is(err, store.ErrNotFound) && dir == store.DirReceive {
		// The requester may not have got the ACK(TRANS.END) of a transfer
		// recorded completed (a crash before it, or before the file was
		// published): its restart confirms the file instead of sending
		// it again.
		rec, err = j.st.FindCompletedReceive(ctx, k, time.Now().Add(-completedRestartWindow))
	}
	if errors.Is(err, store.ErrNotFound) {
		return server.RestartState{}, false, nil
	}
	if err != nil {
		return server.RestartState{}, false, err
	}
	return server.RestartState{
		Transfer:    server.TransferRef{ID: rec.ID, Owner: rec.Epoch},
		TempPath:    rec.TempPath,
		Path:        rec.LocalPath,
		FileCreated: rec.FileCreated,
		Sync:        uint32(rec.SyncPoint.Number),
		Offset:      rec.SyncPoint.Offset,
		Articles:    rec.SyncPoint.Articles,
		Completed:   rec.Status == store.StatusCompleted,
	}, true, nil
}
