package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoLeader is returned by Leader when nobody leads.
var ErrNoLeader = errors.New("election: no leader")

// DefaultPollInterval is how often Observe re-reads the leader even
// without a watch event.
const DefaultPollInterval = time.Second

// LeaderInfo describes the current leader. The zero value (Name == "")
// means no leader.
type LeaderInfo struct {
	Name  string `json:"name"`
	Epoch int64  `json:"epoch"` // create revision of the leader key
	Key   string `json:"key"`
	Lease int64  `json:"lease"`
}

// View reads the cluster state without taking part in it (no lease): the
// CLI and the admin API use it, and Member embeds one.
type View struct {
	cli            *clientv3.Client
	electionPrefix string // "/vectis/<cluster>/election", as concurrency wants it
	membersPrefix  string // "/vectis/<cluster>/members/"
	// PollInterval for Observe (default DefaultPollInterval).
	PollInterval time.Duration
}

// NewView returns a View of cluster through cli.
func NewView(cli *clientv3.Client, cluster string) *View {
	return &View{
		cli:            cli,
		electionPrefix: ElectionPrefix(cluster),
		membersPrefix:  MembersPrefix(cluster),
		PollInterval:   DefaultPollInterval,
	}
}

// ElectionPrefix is the election key prefix of cluster, without the
// trailing slash (the form concurrency.NewElection and `etcdctl elect` take).
func ElectionPrefix(cluster string) string { return "/vectis/" + cluster + "/election" }

// MembersPrefix is the membership key prefix of cluster, with the slash.
func MembersPrefix(cluster string) string { return "/vectis/" + cluster + "/members/" }

func (v *View) memberKey(name string) string { return v.membersPrefix + name }

// Leader returns the current leader: the election key with the lowest
// create revision. It returns ErrNoLeader when there is none.
func (v *View) Leader(ctx context.Context) (LeaderInfo, error) {
	resp, err := v.cli.Get(ctx, v.electionPrefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return LeaderInfo{}, fmt.Errorf("election: get leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return LeaderInfo{}, ErrNoLeader
	}
	kv := resp.Kvs[0]
	return LeaderInfo{Name: string(kv.Value), Epoch: kv.CreateRevision, Key: string(kv.Key), Lease: kv.Lease}, nil
}

// Observe reports the leader now and on every change, including "no
// leader" (the zero LeaderInfo), which concurrency.Election.Observe never
// reports. Changes are seen through a watch and, should a watch miss one,
// a poll. The channel is closed when ctx ends. Transient etcd errors are
// retried silently: the last reported value stays current.
func (v *View) Observe(ctx context.Context) <-chan LeaderInfo {
	ch := make(chan LeaderInfo, 1)
	go func() {
		defer close(ch)
		poll := v.PollInterval
		if poll <= 0 {
			poll = DefaultPollInterval
		}
		tick := time.NewTicker(poll)
		defer tick.Stop()
		var watch clientv3.WatchChan
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		var last LeaderInfo
		first := true
		for {
			if watch == nil {
				watch = v.cli.Watch(clientv3.WithRequireLeader(wctx), v.electionPrefix+"/", clientv3.WithPrefix())
			}
			cur, err := v.Leader(ctx)
			if err == nil || errors.Is(err, ErrNoLeader) {
				if first || cur != last {
					select {
					case ch <- cur:
					case <-ctx.Done():
						return
					}
					last, first = cur, false
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case _, ok := <-watch:
				if !ok {
					// Closed by an error (compaction, no leader): open a
					// new one after the next poll.
					watch = nil
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			}
		}
	}()
	return ch
}

// Members lists the registered members, sorted by name. Only members whose
// lease is alive are listed.
func (v *View) Members(ctx context.Context) ([]MemberInfo, error) {
	resp, err := v.cli.Get(ctx, v.membersPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("election: list members: %w", err)
	}
	out := make([]MemberInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var mi MemberInfo
		if err := json.Unmarshal(kv.Value, &mi); err != nil {
			return nil, fmt.Errorf("election: member key %s: %w", kv.Key, err)
		}
		if mi.Name == "" {
			mi.Name = strings.TrimPrefix(string(kv.Key), v.membersPrefix)
		}
		out = append(out, mi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Member returns the member info of name and the lease its key is on.
func (v *View) Member(ctx context.Context, name string) (MemberInfo, int64, error) {
	resp, err := v.cli.Get(ctx, v.memberKey(name))
	if err != nil {
		return MemberInfo{}, 0, fmt.Errorf("election: get member %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return MemberInfo{}, 0, fmt.Errorf("election: member %s not registered", name)
	}
	var mi MemberInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &mi); err != nil {
		return MemberInfo{}, 0, fmt.Errorf("election: member key of %s: %w", name, err)
	}
	return mi, resp.Kvs[0].Lease, nil
}
