package api_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// BenchmarkAuthenticatedRead measures GET /api/v1/partners/{id} over real
// loopback HTTP against SQLite, authenticated by basic auth (the verification
// cache spares the argon2id derivation after the first request) and by a
// bearer token (one indexed store lookup per request).
//
//	go test -run '^$' -bench AuthenticatedRead -benchtime 2000x ./api/
func BenchmarkAuthenticatedRead(b *testing.B) {
	for _, mode := range []string{"basic", "token"} {
		b.Run(mode, func(b *testing.B) {
			st := openStore(b, store.DriverSQLite)
			e := newEnv(b, st)
			hash, _ := store.HashPassword("pw")
			if _, err := st.CreatePartner(b.Context(), store.Partner{ID: "CXCLIENT", Enabled: true, Access: store.AccessBoth}, hash); err != nil {
				b.Fatal(err)
			}
			plain, th, _ := store.NewToken()
			if _, err := st.CreateToken(b.Context(), store.Token{ID: "bench", User: "admin", Role: store.RoleViewer, ExpiresAt: time.Now().Add(time.Hour)}, th); err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/partners/CXCLIENT", nil)
			if mode == "basic" {
				req.SetBasicAuth("viewer", viewerPW)
			} else {
				req.Header.Set("Authorization", "Bearer "+plain)
			}
			client := &http.Client{}
			b.ResetTimer()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.StopTimer()
			client.CloseIdleConnections()
		})
	}
}
