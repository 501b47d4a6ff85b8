package store

import (
	"context"
	"encoding/json"
	"sync"
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
}

type subscriber struct {
	mu    sync.Mutex
	queue []Change
	wake  chan struct{}
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}, done: make(chan struct{})} }

func (h *hub) subscribe(ctx context.Context) <-chan Change {
	out := make(chan Change)
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
			var next Change
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
			case out <- next:
			case <-ctx.Done():
				return
			case <-h.done:
				return
			}
		}
	}()
	return out
}

func (h *hub) publish(c Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		sub.mu.Lock()
		sub.queue = append(sub.queue, c)
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

// Subscribe returns the configuration changes (partners, files, servers) made
// through any store on the same database, from any process, until ctx ends or
// the store closes; then the channel is closed. On PostgreSQL a Change with
// Op OpResync and Kind KindAll says the listener reconnected and changes may
// have been missed: reload everything. On SQLite the signal is in-process:
// only changes made through this Store are seen (SQLite is the single-node
// store; clustering requires PostgreSQL).
func (s *Store) Subscribe(ctx context.Context) <-chan Change {
	ch := s.hub.subscribe(ctx)
	if s.d.name == DriverPostgres {
		s.startListener()
		// Wait (bounded) until LISTEN is in place so that a change made
		// after Subscribe returns is delivered.
		t := time.NewTimer(s.connTimeout)
		defer t.Stop()
		select {
		case <-s.listenReady:
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ch
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
		s.hub.publish(Change{Kind: KindAll, Op: OpResync})
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		var c Change
		if err := json.Unmarshal([]byte(n.Payload), &c); err != nil {
			s.log.Warn("ignoring malformed change notification", "err", err)
			continue
		}
		s.hub.publish(c)
	}
}

// inTx runs fn in a transaction and announces the changes it reports once
// they are committed: on PostgreSQL with NOTIFY inside the transaction (sent
// by the server at commit, to every listening process including this one),
// on SQLite through the in-process hub after commit.
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
			b, _ := json.Marshal(c)
			if _, err := t.exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, string(b)); err != nil {
				_ = t.rollback(ctx)
				return err
			}
		}
	}
	if err := t.commit(ctx); err != nil {
		return err
	}
	if s.d.name == DriverSQLite {
		for _, c := range changes {
			s.hub.publish(c)
		}
	}
	return nil
}
