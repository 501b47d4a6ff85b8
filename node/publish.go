package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
)

// unpublishedBatch bounds the records one sweep looks at; a backlog (after
// an upgrade, every completed receive still has its temporary path) drains
// over the following sweeps.
const unpublishedBatch = 1000

// publishMetrics count what the sweep of unpublished receives found.
type publishMetrics struct {
	// published: files the sweep renamed to their final name, because the
	// node that recorded them completed stopped before it could.
	published prometheus.Counter
	// conflicts: files left under their temporary name, because another
	// file holds their final name.
	conflicts prometheus.Counter
}

func newPublishMetrics(reg prometheus.Registerer) (*publishMetrics, error) {
	m := &publishMetrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_received_files_recovered_total",
			Help: "Received files recorded completed whose publication (rename to the final name) was interrupted by a crash and done by the leader's sweep.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vectis_received_files_publish_conflicts_total",
			Help: "Received files recorded completed that the leader's sweep could not publish because another file holds their final name.",
		}),
	}
	for _, c := range []prometheus.Collector{m.published, m.conflicts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register publish metrics: %w", err)
		}
	}
	return m, nil
}

// sweepUnpublished finishes the publication of received files. A receive is
// recorded completed before its temporary file is renamed to the final name
// (pesit/server receiver.transEnd: a session whose transfer was taken over is
// refused at the record and publishes nothing), so a crash between the two
// leaves a completed record and the file under its temporary name, which no
// restart would find. Every completed receive keeps its temporary path in
// the record until this sweep has seen the file published and cleared it:
// the query only ever returns the few records completed since the last sweep.
//
// A record whose session still runs here, or whose owner is another node
// still alive, is left to that session: it may be between the record and the
// rename. gone is the orphan sweep's verdict on owners.
func (n *node) sweepUnpublished(ctx context.Context, epoch int64, gone func(store.Transfer) bool) {
	recs, err := n.st.ListUnpublished(ctx, epoch, unpublishedBatch)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("unpublished files sweep", "err", err)
		}
		return
	}
	for _, t := range recs {
		if ctx.Err() != nil {
			return
		}
		mayPublish := !n.pesit.live(t.ID) && (t.Node == n.cfg.Node.Name || gone(t))
		release := func() {}
		// Almost every record is of a file its session published: no claim
		// then, because a partner sending the same name again meanwhile
		// would be refused (2/207) for nothing.
		if mayPublish && t.LocalPath != "" && !exists(t.TempPath) {
			mayPublish = false
		} else if mayPublish {
			// A new transfer to the same final name would write into the
			// same temporary file: none starts while the sweep publishes,
			// and one running leaves the file alone.
			release, mayPublish = n.pesit.claimPath(t.LocalPath)
		}
		pub, err := n.publishReceived(ctx, t, mayPublish)
		if release != nil {
			release()
		}
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			n.log.Warn("unpublished files sweep: cannot publish", "transfer", t.ID, "file", t.LocalPath, "err", err)
			continue
		}
		_, err = n.st.SettlePublished(ctx, epoch, t.ID, t.TempPath, pub.note)
		// Said once the record is settled, so that whoever reads the log
		// or the metric finds the record as it will stay.
		if pub.published {
			n.recovered(t)
		}
		if pub.report != nil {
			pub.report()
		}
		if err != nil && ctx.Err() == nil {
			n.log.Warn("unpublished files sweep", "transfer", t.ID, "err", err)
		}
	}
}

// publication is what publishReceived did with a file.
type publication struct {
	// published: this call renamed the file to its final name.
	published bool
	// note is the diagnostic for the record of a file that cannot be
	// published and is left under its temporary name; report then logs
	// and counts it, and is called once the record is settled.
	note   string
	report func()
}

// leftAlone is the publication of a file left under its temporary name
// because of a publish conflict (counted in
// vectis_received_files_publish_conflicts_total).
func (n *node) leftAlone(note, msg string, attrs ...any) publication {
	return publication{note: note, report: func() {
		if m := n.publishMet; m != nil {
			m.conflicts.Inc()
		}
		n.log.Error(msg, attrs...)
	}}
}

// publishReceived makes sure the file of the completed receive t is
// published. It returns errSkip when the file is still to be published but
// mayPublish is false.
func (n *node) publishReceived(ctx context.Context, t store.Transfer, mayPublish bool) (publication, error) {
	temp, final := t.TempPath, t.LocalPath
	if final == "" {
		return publication{}, nil // nothing to publish to: forget the path
	}
	tfi, err := os.Lstat(temp)
	if errors.Is(err, fs.ErrNotExist) {
		// Published (or taken away since by whoever consumes the files):
		// the normal case.
		return publication{}, nil
	}
	if err != nil {
		return publication{}, fmt.Errorf("temporary file: %w", err)
	}
	if !mayPublish {
		return publication{}, errSkip
	}
	// As for the partial files the node deletes: a record written under a
	// configuration since narrowed does not make the sweep touch files
	// outside the file root.
	for _, p := range []string{temp, final} {
		if err := n.roots.Check(p); err != nil {
			// Not a publish conflict: logged, not counted.
			return publication{note: fmt.Sprintf("received, but not published: %v; the data received is in %s", err, temp), report: func() {
				n.log.Error("received file recorded completed but not published, and outside the file root; left as it is",
					"transfer", t.ID, "file", final, "temporary", temp, "err", err)
			}}, nil
		}
	}
	ffi, err := os.Lstat(final)
	if err != nil || !os.SameFile(tfi, ffi) {
		// Only the bytes the record vouches for are published: the
		// temporary name is reused by a new transfer to the same final
		// name, which may have truncated it since.
		if sum, err := fileSHA256(temp); err != nil {
			return publication{}, err
		} else if t.SHA256 != "" && sum != t.SHA256 {
			return n.leftAlone(fmt.Sprintf("received, but not published: %s no longer holds the data received (SHA-256 %s, recorded %s)", temp, sum, t.SHA256),
				"received file recorded completed but not published, and its temporary file no longer holds the data recorded; left as it is",
				"transfer", t.ID, "partner", t.PartnerID, "file", final, "temporary", temp, "sha256", sum, "recorded_sha256", t.SHA256), nil
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := publishFile(temp, final, false); err != nil {
			return publication{}, err
		}
		return publication{published: true}, nil
	case err != nil:
		return publication{}, fmt.Errorf("final file: %w", err)
	case os.SameFile(tfi, ffi):
		// Published by a hard link; the crash came before the temporary
		// name was removed (sink.commit).
		if err := os.Remove(temp); err != nil {
			return publication{}, fmt.Errorf("remove the temporary name of a published file: %w", err)
		}
		return publication{}, syncDir(filepath.Dir(temp))
	}
	vf, err := n.st.GetFile(ctx, t.FileID)
	if err == nil && vf.Overwrite {
		// The session would have replaced the file: so does the sweep.
		if err := publishFile(temp, final, true); err != nil {
			return publication{}, err
		}
		return publication{published: true}, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return publication{}, fmt.Errorf("virtual file %s: %w", t.FileID, err)
	}
	return n.leftAlone(fmt.Sprintf("received, but not published: %s existed; the data received is in %s", final, temp),
		"received file recorded completed but not published: another file holds its name; both are left as they are",
		"transfer", t.ID, "partner", t.PartnerID, "file", final, "received_into", temp), nil
}

func (n *node) recovered(t store.Transfer) {
	if m := n.publishMet; m != nil {
		m.published.Inc()
	}
	n.log.Warn("received file recorded completed but not published (the node stopped in between); published now",
		"transfer", t.ID, "partner", t.PartnerID, "file", t.LocalPath, "bytes", t.Bytes, "sha256", t.SHA256)
}

// publishFile publishes temp under the name final as the receiving
// session does (server.Publish), once the data is fsynced; publishReceived
// checked that both lie in the file root.
func publishFile(temp, final string, overwrite bool) error {
	f, err := os.OpenFile(temp, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", temp, err)
	}
	dir := commonDir(filepath.Dir(temp), filepath.Dir(final))
	tempRel, err := filepath.Rel(dir, temp)
	if err != nil {
		return err
	}
	finalRel, err := filepath.Rel(dir, final)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := server.Publish(root, tempRel, finalRel, overwrite); err != nil {
		return fmt.Errorf("publish %s: %w", final, err)
	}
	return nil
}

// commonDir is the deepest directory holding both a and b (absolute, clean).
func commonDir(a, b string) string {
	for {
		if rel, err := filepath.Rel(a, b); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return a
		}
		parent := filepath.Dir(a)
		if parent == a {
			return a
		}
		a = parent
	}
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// exists reports whether path names a file (any kind, links not followed);
// an error other than "does not exist" counts as existing, for the caller
// to look closer.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
