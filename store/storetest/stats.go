package storetest

import (
	"maps"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// pagedStats is how the API computed statistics before the store had an
// aggregate query: page through ListTransfers and count in Go. It is the
// reference TransferStats must agree with.
func pagedStats(t *testing.T, s *store.Store, f store.TransferFilter) store.TransferStats {
	t.Helper()
	ctx := ctxT(t)
	st := store.TransferStats{
		ByStatus:         map[store.TransferStatus]int64{},
		ByDirection:      map[store.TransferDirection]int64{},
		BytesByDirection: map[store.TransferDirection]int64{},
	}
	f.Limit = 7 // several pages
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("pagination does not end")
		}
		page, err := s.ListTransfers(ctx, f)
		must(t, err, "list")
		for _, tr := range page.Items {
			st.Total++
			st.ByStatus[tr.Status]++
			st.ByDirection[tr.Direction]++
			st.Bytes += tr.Bytes
			st.BytesByDirection[tr.Direction] += tr.Bytes
		}
		if page.Next == "" {
			return st
		}
		f.Cursor = page.Next
	}
}

func sameStats(a, b store.TransferStats) bool {
	return a.Total == b.Total && a.Bytes == b.Bytes && maps.Equal(a.ByStatus, b.ByStatus) &&
		maps.Equal(a.ByDirection, b.ByDirection) && maps.Equal(a.BytesByDirection, b.BytesByDirection)
}

func testTransferStats(t *testing.T, newConfig NewConfig) {
	ctx := ctxT(t)
	s := Open(t, newConfig(t))
	must(t, s.ClaimLeadership(ctx, 1, "n"), "claim")

	empty, err := s.TransferStats(ctx, store.TransferFilter{})
	must(t, err, "stats of no transfer")
	if empty.Total != 0 || empty.Bytes != 0 || len(empty.ByStatus) != 0 || empty.ByStatus == nil {
		t.Fatalf("stats of an empty store = %+v, want zero counts and empty (non-nil) maps", empty)
	}

	dirs := []store.TransferDirection{store.DirReceive, store.DirSend, store.DirMessage}
	statuses := []store.TransferStatus{store.StatusCompleted, store.StatusFailed, store.StatusInterrupted, store.StatusCancelled, ""}
	const n = 40
	var (
		mid       time.Time
		wantBytes int64
	)
	for i := range n {
		in := SampleTransfer([]string{"P1", "P2", "P3"}[i%3], int64(i))
		in.Direction = dirs[i%len(dirs)]
		if i%4 == 0 {
			in.FileID = "OUTBOX"
		}
		tr, err := s.CreateTransfer(ctx, 1, in)
		must(t, err, "create")
		// Bytes beyond 32 bits, so that a sum truncated anywhere shows.
		bytes := int64(i)*(1<<33) + int64(i*i)
		if st := statuses[i%len(statuses)]; st != "" {
			must(t, s.FinishTransfer(ctx, 1, tr.ID, store.TransferResult{Status: st, Bytes: bytes}), "finish")
		} else {
			must(t, s.AddTransferProgress(ctx, 1, tr.ID, bytes, 1), "progress") // stays in progress
		}
		wantBytes += bytes
		if i == n/2 {
			time.Sleep(2 * time.Millisecond) // created_at has microsecond resolution
			mid = time.Now()
			time.Sleep(2 * time.Millisecond)
		}
	}

	all, err := s.TransferStats(ctx, store.TransferFilter{})
	must(t, err, "stats")
	if all.Total != n || all.Bytes != wantBytes {
		t.Fatalf("stats over everything: total %d, bytes %d; want %d, %d", all.Total, all.Bytes, n, wantBytes)
	}
	for _, f := range []store.TransferFilter{
		{},
		{PartnerID: "P2"},
		{Status: store.StatusCompleted},
		{Status: store.StatusInProgress, Direction: store.DirSend},
		{Direction: store.DirMessage},
		{FileID: "OUTBOX"},
		{ServerID: "PESITSRV", PartnerID: "P1"},
		{Since: mid},
		{Until: mid},
		{Since: mid, Until: time.Now().Add(time.Hour), PartnerID: "P3"},
		{PartnerID: "NOBODY"},
		{Limit: 1, Cursor: "ignored"}, // paging fields do not narrow the statistics
	} {
		got, err := s.TransferStats(ctx, f)
		must(t, err, "stats")
		ref := f
		ref.Cursor = ""
		want := pagedStats(t, s, ref)
		if !sameStats(got, want) {
			t.Errorf("TransferStats(%+v) = %+v\nwant (paged through ListTransfers) %+v", f, got, want)
		}
	}
	if sub := pagedStats(t, s, store.TransferFilter{Since: mid}); sub.Total == 0 || sub.Total == n {
		t.Fatalf("the time filter splits nothing (%d of %d), the test is void", sub.Total, n)
	}
}
