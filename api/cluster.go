package api

import (
	"context"
	"encoding/json"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// ClusterView reports the cluster as this node sees it. The HA layer
// implements it over etcd; Standalone implements it for a node without HA.
type ClusterView interface {
	Status(ctx context.Context) (ClusterStatus, error)
}

// ClusterStatus is the body of GET /api/cluster/status. The first four
// fields are the documented contract; the others are extras.
type ClusterStatus struct {
	ClusterName string    `json:"clusterName"`
	IsLeader    bool      `json:"isLeader"`
	Members     []Member  `json:"members"`
	MemberCount int       `json:"memberCount"`
	Node        string    `json:"node,omitempty"`  // this node's name
	Leader      string    `json:"leader"`          // the leader's name; JSON null while there is none
	Epoch       int64     `json:"epoch,omitempty"` // fencing epoch of the current leadership
	LeaderSince time.Time `json:"leaderSince,omitzero"`
}

// MarshalJSON writes "leader": null while there is no leader, so that a
// client tells "no leader" from "field not supported".
func (s ClusterStatus) MarshalJSON() ([]byte, error) {
	var leader *string
	if s.Leader != "" {
		leader = &s.Leader
	}
	return json.Marshal(struct {
		ClusterName string    `json:"clusterName"`
		IsLeader    bool      `json:"isLeader"`
		Members     []Member  `json:"members"`
		MemberCount int       `json:"memberCount"`
		Node        string    `json:"node,omitempty"`
		Leader      *string   `json:"leader"`
		Epoch       int64     `json:"epoch,omitempty"`
		LeaderSince time.Time `json:"leaderSince,omitzero"`
	}{s.ClusterName, s.IsLeader, s.Members, s.MemberCount, s.Node, leader, s.Epoch, s.LeaderSince})
}

// Member is one node of the cluster.
type Member struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	IsLeader bool   `json:"isLeader"`
}

// Leadership answers the cheap question "am I the leader, and who is?",
// asked before every action that needs the leader's live state.
type Leadership interface {
	IsLeader() bool
	LeaderName() string
}

// ServerControl starts and stops the PeSIT listeners of this node. Only the
// leader runs listeners.
type ServerControl interface {
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string) error
	// Running says whether the server listens here by its stored definition.
	Running(id string) bool
	// Apply brings a running server in line with its stored definition; it
	// touches the listeners only when the listening definition changed.
	Apply(ctx context.Context, id string) error
	// ListenError says why the definition could not be applied here ("").
	ListenError(id string) string
	// Listening is where the server's listeners are bound here, which after
	// a failed change are the old addresses.
	Listening(id string) (addr, tlsAddr string)
}

// TransferCanceller interrupts a live PeSIT session carrying the transfer
// (the peer receives an IDT). It reports false when no live session carries
// it on this node.
type TransferCanceller interface {
	Cancel(ctx context.Context, transferID string) (bool, error)
}

// RestingCanceller is what a TransferCanceller may add: cancelling a
// transfer that no live session carries (interrupted, restartable, or in
// progress under an owner that is gone) and deleting its partial file. It
// returns the cancelled record, or an error wrapping store.ErrConflict
// when the transfer is final or its owner may still finish it.
type RestingCanceller interface {
	CancelResting(ctx context.Context, transferID string) (store.Transfer, error)
}

// Readiness reports whether the node can do its job: the store is reachable
// and, on the leader, the PeSIT listeners are up.
type Readiness interface {
	Ready(ctx context.Context) error
}

// ReadinessFunc adapts a function to Readiness.
type ReadinessFunc func(ctx context.Context) error

// Ready calls f.
func (f ReadinessFunc) Ready(ctx context.Context) error { return f(ctx) }

// Standalone is the cluster of one node that is always the leader: the view
// of a node running without HA. It implements ClusterView and Leadership.
type Standalone struct {
	ClusterName string
	Name        string // node name
	Address     string // advertised address
	Since       time.Time
}

// Status implements ClusterView.
func (s Standalone) Status(context.Context) (ClusterStatus, error) {
	return ClusterStatus{
		ClusterName: s.ClusterName,
		IsLeader:    true,
		Members:     []Member{{Name: s.Name, Address: s.Address, IsLeader: true}},
		MemberCount: 1,
		Node:        s.Name,
		Leader:      s.Name,
		LeaderSince: s.Since,
	}, nil
}

// IsLeader implements Leadership: a standalone node always leads.
func (s Standalone) IsLeader() bool { return true }

// LeaderName implements Leadership.
func (s Standalone) LeaderName() string { return s.Name }
