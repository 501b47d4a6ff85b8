// Package memjournal holds in-memory implementations of the server's
// Directory and Journal, for tests and for a server without a store. The
// durable implementations are the store's.
package memjournal

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/vectis-ft/vectis/pesit/server"
)

// Record is one journaled transfer.
type Record struct {
	ID       string // "1", "2"...: its position in the journal
	Transfer server.Transfer
	Syncs    []Sync
	Outcome  *server.Outcome
	// Superseded is set when a restart took this interrupted transfer over.
	Superseded bool
}

// Sync is a persisted sync point.
type Sync struct {
	Number   uint32
	Offset   int64
	Articles int64
}

// Journal is a server.Journal in memory. Safe for concurrent use.
type Journal struct {
	mu      sync.Mutex
	records []*Record
	syncErr error
	// syncErrAfter: the point is recorded, then the error is returned, as
	// a store whose commit went through while the caller's context ended.
	syncErrAfter bool
	finishErr    error
	// ForgetTempPaths makes FindRestart return no TempPath, as a journal
	// that does not persist it would after a failover.
	ForgetTempPaths bool
}

var _ server.Journal = (*Journal)(nil)

// FailSyncPoints makes SyncPoint fail with err (nil: succeed), as a store
// outage would.
func (j *Journal) FailSyncPoints(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.syncErr = err
}

// FailSyncPointsAfterRecording makes SyncPoint record the point and then
// fail with err, as a store call whose commit went through while the
// caller's context was cancelled does.
func (j *Journal) FailSyncPointsAfterRecording(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.syncErr, j.syncErrAfter = err, err != nil
}

// FailFinishes makes Finish fail with err without recording anything (nil:
// succeed), as a store outage would; an error wrapping
// server.ErrTransferLost plays a takeover by another owner.
func (j *Journal) FailFinishes(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.finishErr = err
}

// Begin implements server.Journal.
// A restart gets a record of its own; the one it resumes is superseded.
// Nothing is fenced: the references carry no owner.
func (j *Journal) Begin(_ context.Context, t server.Transfer) (server.TransferRef, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if r := j.get(t.RestartOf.ID); r != nil {
		r.Superseded = true
	}
	r := &Record{ID: strconv.Itoa(len(j.records) + 1), Transfer: t}
	j.records = append(j.records, r)
	return server.TransferRef{ID: r.ID}, nil
}

// SyncPoint implements server.Journal.
func (j *Journal) SyncPoint(_ context.Context, ref server.TransferRef, sync uint32, offset, articles int64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.syncErr != nil && !j.syncErrAfter {
		return j.syncErr
	}
	r := j.get(ref.ID)
	if r == nil {
		return fmt.Errorf("transfer %s: %w", ref.ID, server.ErrNotFound)
	}
	r.Syncs = append(r.Syncs, Sync{Number: sync, Offset: offset, Articles: articles})
	return j.syncErr
}

// Finish implements server.Journal.
func (j *Journal) Finish(_ context.Context, ref server.TransferRef, o server.Outcome) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.finishErr != nil {
		return j.finishErr
	}
	r := j.get(ref.ID)
	if r == nil {
		return fmt.Errorf("transfer %s: %w", ref.ID, server.ErrNotFound)
	}
	r.Outcome = &o
	return nil
}

// FindRestart implements server.Journal: the latest interrupted transfer for
// the key that no restart has taken over yet. As in the store, a transfer
// without an outcome (its end could not be recorded) counts as interrupted
// at its last sync point.
func (j *Journal) FindRestart(_ context.Context, k server.RestartKey) (server.RestartState, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range slices.Backward(j.records) {
		t := r.Transfer
		if t.Partner != k.Partner || t.Direction != k.Direction || t.PeSITID != k.PeSITID || t.VirtualFile != k.File || t.Message {
			continue
		}
		// A receive recorded done is returned as Completed, as the store's
		// journal does within its window.
		completed := r.Outcome != nil && r.Outcome.Status == server.StatusDone && t.Direction == server.DirectionReceive
		if r.Superseded || r.Outcome != nil && r.Outcome.Status != server.StatusInterrupted && !completed {
			return server.RestartState{}, false, nil
		}
		st := server.RestartState{Transfer: server.TransferRef{ID: r.ID}, Path: t.Path, TempPath: t.TempPath, FileCreated: t.FileCreated, Completed: completed}
		if j.ForgetTempPaths {
			st.TempPath = ""
		}
		if n := len(r.Syncs); n > 0 {
			s := r.Syncs[n-1]
			st.Sync, st.Offset, st.Articles = s.Number, s.Offset, s.Articles
		}
		return st, true, nil
	}
	return server.RestartState{}, false, nil
}

// Records returns copies of every record, oldest first.
func (j *Journal) Records() []Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]Record, len(j.records))
	for i, r := range j.records {
		out[i] = *r
		out[i].Syncs = slices.Clone(r.Syncs)
		if r.Outcome != nil {
			o := *r.Outcome
			out[i].Outcome = &o
		}
	}
	return out
}

// Last returns the latest record, if any.
func (j *Journal) Last() (Record, bool) {
	recs := j.Records()
	if len(recs) == 0 {
		return Record{}, false
	}
	return recs[len(recs)-1], true
}

func (j *Journal) get(id string) *Record {
	n, err := strconv.Atoi(id)
	if err != nil || n < 1 || n > len(j.records) {
		return nil
	}
	return j.records[n-1]
}

// Directory is a server.Directory in memory. Safe for concurrent use.
type Directory struct {
	mu       sync.Mutex
	partners map[string]server.Partner
	files    map[string]server.VirtualFile
}

var _ server.Directory = (*Directory)(nil)

// AddPartner adds or replaces a partner.
func (d *Directory) AddPartner(p server.Partner) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.partners == nil {
		d.partners = make(map[string]server.Partner)
	}
	d.partners[p.ID] = p
}

// AddFile adds or replaces a virtual file.
func (d *Directory) AddFile(f server.VirtualFile) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.files == nil {
		d.files = make(map[string]server.VirtualFile)
	}
	d.files[f.ID] = f
}

// Partner implements server.Directory.
func (d *Directory) Partner(_ context.Context, id string) (server.Partner, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.partners[id]
	if !ok {
		return p, fmt.Errorf("partner %q: %w", id, server.ErrNotFound)
	}
	return p, nil
}

// VirtualFile implements server.Directory.
func (d *Directory) VirtualFile(_ context.Context, id string) (server.VirtualFile, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.files[id]
	if !ok {
		return f, fmt.Errorf("virtual file %q: %w", id, server.ErrNotFound)
	}
	return f, nil
}

// Password returns a VerifyPassword func comparing in constant time.
func Password(want string) func(string) bool {
	return func(got string) bool { return subtleEqual(got, want) }
}
