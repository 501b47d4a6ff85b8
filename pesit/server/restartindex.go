package server

import (
	"encoding/binary"
	"hash/fnv"
	"os"
)

// A receiving server acknowledges a sync point only when the data behind it
// and the way to find it again are durable. The way to find it is the
// journal's record of the point; made durable on its own, it is a second
// fsync per point (issue 17: what kept `vectis serve` behind the in-memory
// journal on a push with sync points).
// When the journal can record a point without its own flush
// (DeferredJournal), the point is written instead as the temporary file's
// restart index, an extended attribute of the file, before the file's
// fsync: fsync makes an inode's attributes durable with its data, so one
// fsync covers both. The journal's deferred record reaches the disk later;
// a restart after a machine crash that lost it finds the point on the file
// (resumeReceive). Where the file system has no extended attributes, the
// journal records the point durably, as before.

// restartIndexAttr is the extended attribute that holds the index. Short,
// so that it fits in the inode beside the file's other attributes.
const restartIndexAttr = "user.vectis.rp"

// restartIndexLen is the encoded size: version, key hash, point number,
// offset, articles.
const restartIndexLen = 1 + 8 + 4 + 8 + 8

const restartIndexVersion = 1

// indexKey hashes a transfer key to the 8 bytes the index holds: enough to
// tell one transfer's record from another's, in a fixed size.
func indexKey(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

func encodeRestartIndex(b *[restartIndexLen]byte, key uint64, pt syncPoint) {
	b[0] = restartIndexVersion
	binary.BigEndian.PutUint64(b[1:], key)
	binary.BigEndian.PutUint32(b[9:], pt.num)
	binary.BigEndian.PutUint64(b[13:], uint64(pt.offset))
	binary.BigEndian.PutUint64(b[21:], uint64(pt.articles))
}

func decodeRestartIndex(b []byte) (key uint64, pt syncPoint, ok bool) {
	if len(b) != restartIndexLen || b[0] != restartIndexVersion {
		return 0, syncPoint{}, false
	}
	pt = syncPoint{num: binary.BigEndian.Uint32(b[9:]), offset: int64(binary.BigEndian.Uint64(b[13:])),
		articles: int64(binary.BigEndian.Uint64(b[21:]))}
	if pt.offset < 0 || pt.articles < 0 {
		return 0, syncPoint{}, false
	}
	return binary.BigEndian.Uint64(b[1:]), pt, true
}

// readRestartIndex returns the index on f, if it has one.
func readRestartIndex(f *os.File) (key uint64, pt syncPoint, ok bool) {
	var b [restartIndexLen + 1]byte // one more: a longer value is not ours
	n, err := getAttr(f, restartIndexAttr, b[:])
	if err != nil {
		return 0, syncPoint{}, false
	}
	return decodeRestartIndex(b[:n])
}

// useIndex makes the sink write each sync point as the file's restart
// index, under key, before its fsync; start is the point the file holds
// already (0 for a new file), where a truncation may come back to.
func (s *sink) useIndex(key string, start syncPoint) {
	s.indexOn, s.indexKey = true, indexKey(key)
	s.indexed = append(s.indexed[:0], start)
}

// writeIndex sets the index to pt, on the writer goroutine. False when the
// file cannot hold it: the point is then journaled durably, and so are the
// following ones (an index left at an older point is harmless: a restart
// takes the later of it and the journal's).
func (s *sink) writeIndex(pt syncPoint) bool {
	if !s.indexOn {
		return false
	}
	var b [restartIndexLen]byte
	encodeRestartIndex(&b, s.indexKey, pt)
	if err := setAttr(s.f, restartIndexAttr, b[:]); err != nil {
		s.indexOn = false
		return false
	}
	// Only recent points can be cut back to (a RESYN goes back at most a
	// sync window; an interruption to the last acknowledged point): keep
	// the last indexKeep, so that a long transfer's sink does not grow by
	// a point per MiB. A cut behind them removes the index, which is only
	// a hint: the journal's point then decides.
	if len(s.indexed) == 2*indexKeep {
		s.indexed = append(s.indexed[:0], s.indexed[indexKeep:]...)
	}
	s.indexed = append(s.indexed, pt)
	return true
}

// indexKeep is how many indexed points a sink remembers at least: more
// than the largest sync window (PI 7 allows up to 16).
const indexKeep = 64

// cutIndex brings the index back to the last indexed point at or before
// offset, or removes it, before the file is truncated to offset: an index
// must never name data the file no longer holds. The writer is idle.
func (s *sink) cutIndex(offset int64) error {
	if len(s.indexed) == 0 || s.indexed[len(s.indexed)-1].offset <= offset {
		return nil
	}
	i := len(s.indexed) - 1
	for i >= 0 && s.indexed[i].offset > offset {
		i--
	}
	s.indexed = s.indexed[:i+1]
	if i < 0 || s.indexed[i].num == 0 {
		return removeAttr(s.f, restartIndexAttr)
	}
	var b [restartIndexLen]byte
	encodeRestartIndex(&b, s.indexKey, s.indexed[i])
	return setAttr(s.f, restartIndexAttr, b[:])
}

// dropIndex removes the index of a file about to be published or started
// afresh; it is only ever a hint for a restart, so failures are ignored.
func dropIndex(f *os.File) { _ = removeAttr(f, restartIndexAttr) }

// indexSink makes the receiver's sink keep a restart index, under the
// transfer's store id, when the journal can use it.
func (r *receiver) indexSink(ref TransferRef, start syncPoint) {
	if _, ok := r.s.srv.jnl.(DeferredJournal); ok && !r.sink.verifying() && ref.ID != "" {
		r.sink.useIndex(ref.ID, start)
	}
}

// journalPoint records last, the newest of the points just made durable:
// without a flush of the journal's own when the file's index holds it.
func (r *receiver) journalPoint(ref TransferRef, last syncPoint, indexed bool) error {
	s := r.s
	if dj, ok := s.srv.jnl.(DeferredJournal); ok && indexed {
		return dj.SyncPointDeferred(s.ctx, ref, last.num, last.offset, last.articles)
	}
	return s.srv.jnl.SyncPoint(s.ctx, ref, last.num, last.offset, last.articles)
}

// resumeReceive reopens the temporary file at the later of the journal's
// restart point and the file's index, when the index is the same
// transfer's (the journal's deferred record of it may have been lost with
// the machine), and then updates x.restart to it.
func (r *receiver) resumeReceive(bufSize int) (*sink, error) {
	rs := r.x.restart
	pt := syncPoint{num: rs.Sync, offset: rs.Offset, articles: rs.Articles}
	fromIndex := false
	if _, ok := r.s.srv.jnl.(DeferredJournal); ok && rs.Transfer.ID != "" {
		if ipt, ok := r.indexedPoint(indexKey(rs.Transfer.ID)); ok {
			pt, fromIndex = ipt, true
		}
	}
	sk, err := resumeSink(r.root, r.tempRel, r.finalRel, bufSize, pt.offset, pt.articles)
	if err != nil {
		return nil, err
	}
	if fromIndex {
		r.s.log.Info("restart point from the file's index, later than the journal's",
			"file", r.tempRel, "journal", rs.Sync, "index", pt.num, "offset", pt.offset)
		rs.Sync, rs.Offset, rs.Articles = pt.num, pt.offset, pt.articles
	}
	r.sink = sk
	r.indexSink(r.x.ref, pt)
	return sk, nil
}

// indexedPoint reads the index of the temporary file: a point of the
// transfer key names that is later than the journal's and that the file
// holds.
func (r *receiver) indexedPoint(key uint64) (syncPoint, bool) {
	f, err := r.root.Open(r.tempRel)
	if err != nil {
		return syncPoint{}, false
	}
	defer f.Close()
	k, pt, ok := readRestartIndex(f)
	rs := r.x.restart
	if !ok || k != key || pt.num <= rs.Sync || pt.offset < rs.Offset || pt.articles < rs.Articles {
		return syncPoint{}, false
	}
	st, err := f.Stat()
	if err != nil || st.Size() < pt.offset {
		return syncPoint{}, false
	}
	return pt, true
}
