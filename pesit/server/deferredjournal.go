package server

import "context"

// DeferredJournal is a Journal that can record a sync point without
// making it durable before it returns.
type DeferredJournal interface {
	Journal
	// SyncPointDeferred records a sync point like SyncPoint, visible to
	// FindRestart at once, but a machine crash may lose it: the caller
	// has made the point durable elsewhere.
	SyncPointDeferred(ctx context.Context, ref TransferRef, sync uint32, offset int64, articles int64) error
}
