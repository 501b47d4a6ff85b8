package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/internal/testenv"
	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// running returns the id of a transfer the journal shows unfinished.
func (j *memJournal) running() (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, r := range j.recs {
		if r.outcome == nil && !r.t.Message {
			return strconv.Itoa(i + 1), nil
		}
	}
	return "", fmt.Errorf("no running transfer among %d journal records", len(j.recs))
}

// TestServerIDT has the server interrupt a push and a pull (IDT, PI 19 =
// 12): the client acknowledges it, closes the file and reports a final
// *TransferError; the connection stays usable. With sync points, SYNs of a
// push are in flight when the IDT goes out (a 4 KB interval makes one every
// few frames): the server must drop them, not acknowledge them.
func TestServerIDT(t *testing.T) {
	for _, c := range []struct {
		push   bool
		syncKB uint16
		window uint8
	}{{true, 0, 0}, {false, 0, 0}, {true, 4, 2}, {false, 4, 2}, {true, 4, 0}} {
		push := c.push
		name := fmt.Sprintf("%s sync %d KB window %d", map[bool]string{true: "push", false: "pull"}[push], c.syncKB, c.window)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ts := startServer(t, serverOpts{syncKB: c.syncKB, window: c.window, entity: 4096})
			local := t.TempDir()
			s, err := Dial(ctx, ts.config(false, c.syncKB, c.window))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			errc := make(chan error, 1)
			dst := filepath.Join(local, "dst.bin")
			// The IDT is to come in the data phase: the client has moved
			// data, so the transfer is past its ACK(WRITE) or ACK(READ).
			flowing := make(chan struct{})
			var once sync.Once
			progress := func(p Progress) {
				if p.Bytes > 0 {
					once.Do(func() { close(flowing) })
				}
			}
			if push {
				src := writeRandom(t, local, "src.bin", 128<<20, 5)
				go func() {
					_, err := s.Send(ctx, SendRequest{Source: src, VirtualFile: "IDT", Progress: progress})
					errc <- err
				}()
			} else {
				writeRandom(t, ts.out, "IDT", 128<<20, 5)
				go func() {
					_, err := s.Receive(ctx, ReceiveRequest{VirtualFile: "IDT", Dest: dst, Progress: progress})
					errc <- err
				}()
			}
			select {
			case <-flowing:
			case err := <-errc:
				t.Fatalf("%s ended before its data phase: %v", name, err)
			case <-ctx.Done():
				t.Fatalf("%s: no data moved", name)
			}
			var id string
			testenv.Eventually(t, 10*time.Second, func() (err error) {
				id, err = ts.jnl.running()
				return err
			})
			if err := ts.srv.CancelTransfer(ctx, id); err != nil {
				t.Fatalf("cancel: %v", err)
			}
			err = <-errc
			var te *TransferError
			if !errors.As(err, &te) || te.Op != fpdu.IDT || te.EndCode != 12 {
				t.Fatalf("interrupted %s: %v, want an IDT with end code 12", name, err)
			}
			if Retryable(err) {
				t.Error("a cancellation by the server must not be retried")
			}
			if _, err := os.Stat(dst); !push && err == nil {
				t.Fatal("an interrupted pull left a file under the final name")
			}
			if err := s.Message(ctx, "after IDT"); err != nil {
				t.Fatalf("session unusable after IDT: %v", err)
			}
			if err := s.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMessage sends a short MSG and a long one (MSGDM, MSGMM, MSGFM) and
// checks the text the server recorded.
func TestMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts := startServer(t, serverOpts{syncKB: 32, window: 2})
	s, err := Dial(ctx, ts.config(false, 32, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	long := strings.Repeat("0123456789abcdef", 700) // 11200 bytes: three segments
	for _, text := range []string{"hello bank", long} {
		if err := s.Message(ctx, text); err != nil {
			t.Fatalf("message of %d bytes: %v", len(text), err)
		}
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
	ts.jnl.mu.Lock()
	defer ts.jnl.mu.Unlock()
	var got []string
	for _, r := range ts.jnl.recs {
		if r.t.Message {
			got = append(got, r.t.Text)
		}
	}
	if len(got) != 2 || got[0] != "hello bank" || got[1] != long {
		t.Fatalf("server recorded %d messages (lengths %v), want the 2 sent", len(got), lens(got))
	}
}

func lens(ss []string) []int {
	var n []int
	for _, s := range ss {
		n = append(n, len(s))
	}
	return n
}
