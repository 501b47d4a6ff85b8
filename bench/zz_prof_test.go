package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vectis-ft/vectis/pesit/client"
)

func BenchmarkZZPull(b *testing.B) {
	work := b.TempDir()
	src := writeRandom(b, work, 256<<20)
	os.MkdirAll(filepath.Join(work, "out"), 0o750)
	os.Link(src, filepath.Join(work, "out", "OUTBOX"))
	mem := startMemTarget(b, work)
	dest := filepath.Join(work, "d.bin")
	for range 4 {
		cfg := realConfig(mem.addr, "BENCH", "bench-pw", "VECTIS", os.Getenv("NOSYNC") == "")
		_, err := client.Pull(context.Background(), cfg, client.ReceiveRequest{VirtualFile: "OUTBOX", Dest: dest, EntitySize: entitySize, NoRestart: true}, client.Retry{})
		if err != nil {
			b.Fatal(err)
		}
	}
}
