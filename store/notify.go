package store

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is the PostgreSQL LISTEN/NOTIFY channel for Change values.
const notifyChannel = "vectis_changes"

// hub fans changes out to in-process subscribers. Each subscriber has an
// unbounded queue drained by its own goroutine, so a slow reader never blocks
// a writer and never loses a change.
type hub struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	done   chan struct{}
	closed bool
	wg     sync.WaitGroup
	// seq is the Seq of the last change committed through this Store. It
	// is advanced under mu, so that every queue holds its events in Seq
	// order.
	seq atomic.Int64
}

type subscriber struct {
	mu    sync.Mutex
	queue []Event
	wake  chan struct{}
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}, done: make(chan struct{})} }

// subscribe delivers the events published from now on, converted by conv,
// until ctx ends or the hub closes.
func subscribe[T any](h *hub, ctx context.Context, conv func(Event) T) <-chan T {
	out := make(chan T)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		close(out)
		return out
	}
	sub := &subscriber{wake: make(chan struct{}, 1)}
	h.subs[sub] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		defer close(out)
		defer func() {
			h.mu.Lock()
			delete(h.subs, sub)
			h.mu.Unlock()
		}()
		for {
			sub.mu.Lock()
			var next Event
			have := len(sub.queue) > 0
			if have {
				next = sub.queue[0]
				sub.queue = sub.queue[1:]
			}
			sub.mu.Unlock()
			if !have {
				select {
				case <-sub.wake:
					continue
				case <-ctx.Done():
					return
				case <-h.done:
					return
				}
			}
			select {
			case out <- conv(next):
			case <-ctx.Done():
				return
			case <-h.done:
				return
			}
		}
	}()
	return out
}

// publish queues c for every subscriber. A local change (committed through
// this Store) gets the next Seq; one from another process gets none.
func (h *hub) publish(c Change, local bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := Event{Change: c}
	if local {
		e.Seq = h.seq.Add(1)
	}
	for sub := range h.subs {
		sub.mu.Lock()
		sub.queue = append(sub.queue, e)
		sub.mu.Unlock()
		select {
		case sub.wake <- struct{}{}:
		default:
		}
	}
}

func (h *hub) close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// Event is a Change with its place among the changes committed through
// this Store.
type Event struct {
	Change
	// Seq numbers the changes committed through this Store, from 1, in
	// the order they were published, which is after their commit and
	// before the call that made them returned. It is 0 for a change
	// another process made (PostgreSQL) and for a resync.
	Seq int64
}

// Seq is the Seq of the last change committed through this Store. An
// in-memory copy of the catalog that has applied every Event up to it (or
// loaded the catalog after reading it) holds every change this Store made:
// a copy behind it may be stale, and a reader should go to the store. That
// is how the node's views serve a change from the next lookup after the
// API call that made it returned, without waiting for the notification.
func (s *Store) Seq() int64 { return s.hub.seq.Load() }

// Watch is Subscribe with each change's Seq.
func (s *Store) Watch(ctx context.Context) <-chan Event {
	ch := subscribe(s.hub, ctx, func(e Event) Event { return e })
	s.awaitListener(ctx)
	return ch
}

// Subscribe returns the configuration changes (partners, files, servers) made
// through any store on the same database, from any process, until ctx ends or
// the store closes; then the channel is closed. On PostgreSQL a Change with
// Op OpResync and Kind KindAll says the listener reconnected and changes may
// have been missed: reload everything. On SQLite the signal is in-process:
// only changes made through this Store are seen (SQLite is the single-node
// store; clustering requires PostgreSQL).
func (s *Store) Subscribe(ctx context.Context) <-chan Change {
	ch := subscribe(s.hub, ctx, func(e Event) Change { return e.Change })
	s.awaitListener(ctx)
	return ch
}

// awaitListener starts the PostgreSQL listener and waits (bounded) until
// LISTEN is in place, so that a change another process makes after
// Subscribe returns is delivered.
func (s *Store) awaitListener(ctx context.Context) {
	if s.d.name != DriverPostgres {
		return
	}
	s.startListener()
	t := time.NewTimer(s.connTimeout)
	defer t.Stop()
	select {
	case <-s.listenReady:
	case <-ctx.Done():
	case <-t.C:
	}
}

func (s *Store) startListener() {
	s.listenOnce.Do(func() {
		s.closeMu.Lock()
		defer s.closeMu.Unlock()
		s.listenReady = make(chan struct{})
		if s.closed {
			close(s.listenReady)
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		s.listenCancel = cancel
		s.listenDone = make(chan struct{})
		go s.listen(ctx)
	})
}

// listen holds a dedicated connection (LISTEN does not survive a pooled
// connection being handed to someone else) and reconnects with backoff.
func (s *Store) listen(ctx context.Context) {
	defer close(s.listenDone)
	first := true
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		connected, err := s.listenOnceConn(ctx, &first)
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = 100 * time.Millisecond
		}
		s.log.Warn("store change listener disconnected; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// listenOnceConn listens on one connection until it fails; connected says
// whether LISTEN was established (to reset the reconnect backoff).
func (s *Store) listenOnceConn(ctx context.Context, first *bool) (connected bool, _ error) {
	cctx, cancel := context.WithTimeout(ctx, s.connTimeout)
	conn, err := pgx.ConnectConfig(cctx, s.pgConnConfig.Copy())
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return false, err
	}
	if *first {
		*first = false
		close(s.listenReady)
	} else {
		s.hub.publish(Change{Kind: KindAll, Op: OpResync}, false)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		var w wireChange
		if err := json.Unmarshal([]byte(n.Payload), &w); err != nil {
			s.log.Warn("ignoring malformed change notification", "err", err)
			continue
		}
		if w.Origin == s.origin {
			continue // published at its commit, with its Seq
		}
		s.hub.publish(w.Change, false)
	}
}

// wireChange is a Change as NOTIFY carries it. Origin names the Store that
// made it; a version without it sends none, and its changes are foreign to
// every Store.
type wireChange struct {
	Change
	Origin string `json:"origin,omitempty"`
}

// inTx runs fn in a transaction and announces the changes it reports: on
// PostgreSQL with NOTIFY inside the transaction (sent by the server at
// commit, to every listening process), and to this Store's subscribers
// through the in-process hub after commit, before inTx returns, with their
// Seq (see Store.Seq). This Store's listener skips its own NOTIFY.
func (s *Store) inTx(ctx context.Context, fn func(tx) ([]Change, error)) error {
	t, err := s.db.begin(ctx)
	if err != nil {
		return err
	}
	changes, err := fn(t)
	if err != nil {
		_ = t.rollback(ctx)
		return err
	}
	if s.d.name == DriverPostgres {
		for _, c := range changes {
			b, _ := json.Marshal(wireChange{Change: c, Origin: s.origin})
			if _, err := t.exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, string(b)); err != nil {
				_ = t.rollback(ctx)
				return err
			}
		}
	}
	err = t.commit(ctx)
	// Announced even when the commit reports an error: a commit whose
	// answer was lost may have happened, and this Store's listener skips
	// its NOTIFY. A change that did not happen costs a subscriber a
	// needless reload; a missed one, a stale view.
	for _, c := range changes {
		s.hub.publish(c, true)
	}
	return err
}
