package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/election"
	"github.com/vectis-ft/vectis/internal/testenv/etcdtest"
)

func TestClusterStatusReadsTheLeaderFromEtcd(t *testing.T) {
	etcd := etcdtest.Start(t, etcdtest.Options{Size: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := election.New(ctx, election.Config{
		Endpoints: etcd.Endpoints(), TTL: 2 * time.Second, Cluster: "c1", Name: "vectis-0", Address: "127.0.0.10",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	lead, err := m.Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) string {
		var out bytes.Buffer
		root := newRootCommand()
		root.SetOut(&out)
		root.SetArgs(append([]string{"cluster", "status", "--set", "cluster.name=c1",
			"--set", "cluster.etcd.endpoints=" + strings.Join(etcd.Endpoints(), ",")}, args...))
		if err := root.ExecuteContext(ctx); err != nil {
			t.Fatalf("vectis cluster status: %v", err)
		}
		return out.String()
	}
	text := run()
	if !strings.Contains(text, "leader vectis-0") || !strings.Contains(text, "127.0.0.10") {
		t.Fatalf("status output:\n%s", text)
	}
	var js struct {
		Leader struct {
			Name  string `json:"name"`
			Epoch int64  `json:"epoch"`
		} `json:"leader"`
		MemberCount int `json:"memberCount"`
	}
	if err := json.Unmarshal([]byte(run("-o", "json")), &js); err != nil {
		t.Fatal(err)
	}
	if js.Leader.Name != "vectis-0" || js.Leader.Epoch != lead.Epoch() || js.MemberCount != 1 {
		t.Fatalf("json status = %+v, want vectis-0 at epoch %d", js, lead.Epoch())
	}
}
