package ha

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/vectis-ft/vectis/election"
)

// observe follows the leader and the membership while this member lives. It
// notes when a leader disappears: that instant starts the failover span of
// the member that takes over.
func (l *Loop) observe(ctx context.Context, m *election.Member) {
	leaders := m.View.Observe(ctx)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	l.refreshMembers(ctx, m)
	for {
		select {
		case <-ctx.Done():
			return
		case info, ok := <-leaders:
			if !ok {
				return
			}
			l.noteLeader(info)
			// A leader change usually comes with a member change (the old
			// leader's key expired with its lease, or it is restarting):
			// refresh now rather than up to a tick later.
			l.refreshMembers(ctx, m)
		case <-t.C:
			l.refreshMembers(ctx, m)
		}
	}
}

func (l *Loop) noteLeader(info election.LeaderInfo) {
	l.mu.Lock()
	prev := l.leader
	l.leader = info
	// Another leader is lost when its key goes away, whether the observer
	// sees "no leader" or the next leader (perhaps this node) first.
	if prev.Name != "" && prev.Key != info.Key && prev.Name != l.cfg.Election.Name {
		l.lostAt = time.Now()
		l.lostLeader = prev.Name
		l.lostInfo = prev
	}
	l.mu.Unlock()
	select {
	case l.leaderChange <- struct{}{}:
	default:
	}
	if info.Name != "" && info.Key != prev.Key {
		l.cfg.Metrics.leaderChanged()
		l.log.Info("leader observed", "leader", info.Name, "epoch", info.Epoch)
	} else if info.Name == "" && prev.Name != "" {
		l.log.Warn("no leader", "previous", prev.Name)
	}
}

func (l *Loop) refreshMembers(ctx context.Context, m *election.Member) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	members, err := m.View.Members(ctx)
	if err != nil {
		return
	}
	l.cfg.Metrics.setMembers(len(members))
}

// Member is one cluster member as the status API shows it.
type Member struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	IsLeader bool   `json:"isLeader"`
}

// Status is the cluster as this node sees it.
type Status struct {
	ClusterName string
	Self        string
	State       State
	IsLeader    bool // this node leads and serves
	Leader      string
	Epoch       int64 // the current leader's epoch
	LeaderSince time.Time
	Members     []Member
}

// Status reads the members and the leader from etcd. Without a live session
// it reports this node alone, as a follower.
func (l *Loop) Status(ctx context.Context) (Status, error) {
	l.mu.Lock()
	m := l.member
	st := Status{
		ClusterName: l.cfg.Election.Cluster,
		Self:        l.cfg.Election.Name,
		State:       l.state,
		IsLeader:    l.state == StateLeader,
		LeaderSince: l.leaderSince,
	}
	l.mu.Unlock()
	if m == nil {
		st.Members = []Member{{Name: st.Self, Address: l.cfg.Election.Address}}
		return st, nil
	}
	leader, err := m.View.Leader(ctx)
	if err != nil && err != election.ErrNoLeader {
		return st, err
	}
	st.Leader, st.Epoch = leader.Name, leader.Epoch
	members, err := m.View.Members(ctx)
	if err != nil {
		return st, err
	}
	// The gauge never lags what the status API shows.
	l.cfg.Metrics.setMembers(len(members))
	for _, mi := range members {
		st.Members = append(st.Members, Member{Name: mi.Name, Address: mi.Address, IsLeader: mi.Name == leader.Name})
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].Name < st.Members[j].Name })
	return st, nil
}

// IsLeader reports whether this node leads and serves now.
func (l *Loop) IsLeader() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == StateLeader
}

// LeaderName is the leader last observed, "" if none.
func (l *Loop) LeaderName() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leader.Name
}

// Epoch is this node's term while it leads, else 0.
func (l *Loop) Epoch() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

// Members lists the live cluster members (membership keys whose lease is
// alive). Without a session it fails.
func (l *Loop) Members(ctx context.Context) ([]election.MemberInfo, error) {
	l.mu.Lock()
	m := l.member
	l.mu.Unlock()
	if m == nil {
		return nil, errors.New("ha: not joined to the cluster")
	}
	return m.View.Members(ctx)
}
