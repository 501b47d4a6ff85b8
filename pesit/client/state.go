package client

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// syncPoint maps a sync point number to the position in the local file where
// the data after it starts, so that a restart can seek there and carry on
// counting bytes and articles.
type syncPoint struct {
	N        uint32 `json:"n"`
	Offset   int64  `json:"offset"`   // local file offset
	Articles int64  `json:"articles"` // articles before the point
	Bytes    int64  `json:"bytes"`    // data bytes (PI 27 units) before the point
}

// maxSendPoints bounds the sync points a sender remembers. The receiver may
// restart from any point it acknowledged, which can be later than the last
// ACK(SYN) we read before the cut, but not older than its last
// acknowledgement, so the points since the last ACK we saw are enough.
const maxSendPoints = 256

// transferState is the restart state of one transfer, persisted as JSON so
// that a retry in a new process can resume.
type transferState struct {
	Version     int    `json:"version"`
	Direction   string `json:"direction"` // "send" or "receive"
	Addr        string `json:"addr"`
	ServerID    string `json:"server_id"`
	Partner     string `json:"partner"`
	VirtualFile string `json:"virtual_file"`
	Local       string `json:"local"` // absolute path of the source or of the final destination
	Size        int64  `json:"size,omitempty"`
	ModTime     int64  `json:"mtime,omitempty"`
	// Options are the settings that shape the exchange (article length
	// and format, data code, DTF packing, entity size, sync interval):
	// a restart with other options would be another transfer.
	Options string `json:"options"`
	// Source identifies the server's file of a pull (PI 51 and PI 42 of
	// ACK(SELECT)), checked when a restart is answered.
	Source     string      `json:"source,omitempty"`
	TransferID uint32      `json:"transfer_id"` // PI 13: ours for a send, the server's for a receive
	Acked      uint32      `json:"acked"`       // last sync point acknowledged (send) or fsynced and acknowledged (receive)
	Points     []syncPoint `json:"points,omitempty"`
}

func (st *transferState) point(n uint32) (syncPoint, bool) {
	if n == 0 {
		return syncPoint{}, true
	}
	for _, p := range st.Points {
		if p.N == n {
			return p, true
		}
	}
	return syncPoint{}, false
}

func (st *transferState) addPoint(p syncPoint) {
	if len(st.Points) >= maxSendPoints {
		st.Points = append(st.Points[:0], st.Points[len(st.Points)-maxSendPoints+1:]...)
	}
	st.Points = append(st.Points, p)
}

// sameTransfer reports whether a loaded state describes the transfer that
// o describes: same server id and partner (not the address, which may change
// between a node and its standby), same files, same source contents (size
// and mtime).
func (st *transferState) sameTransfer(o *transferState) bool {
	return st.Version == stateVersion && st.Direction == o.Direction && st.Options == o.Options &&
		st.ServerID == o.ServerID && st.Partner == o.Partner && st.VirtualFile == o.VirtualFile &&
		st.Local == o.Local && st.Size == o.Size && st.ModTime == o.ModTime && st.TransferID != 0
}

// stateVersion 2 added Options: a version 1 state may have been written
// for other options, so it is not resumed.
const stateVersion = 2

// stateFile is the JSON file holding a transferState. It is rewritten in
// place at every sync point: a torn write only loses the ability to restart
// (the JSON no longer parses and the transfer starts over), never data.
type stateFile struct {
	path string
	f    *os.File
}

// statePath names the state file: in dir when given, else beside local as a
// hidden file.
func statePath(dir string, key *transferState) string {
	if dir != "" {
		h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s",
			key.Direction, key.ServerID, key.Partner, key.VirtualFile, key.Local))
		return filepath.Join(dir, key.Direction+"-"+hex.EncodeToString(h[:12])+".json")
	}
	return filepath.Join(filepath.Dir(key.Local), "."+filepath.Base(key.Local)+".vectis-"+key.Direction+".json")
}

// openState opens (creating) the state file and returns the state it holds
// if it matches key; otherwise nil.
func openState(path string, key *transferState) (*stateFile, *transferState, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("state directory: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open state file: %w", err)
	}
	sf := &stateFile{path: path, f: f}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		_ = f.Close()
		return nil, nil, fmt.Errorf("read state file: %w", err)
	}
	var st transferState
	if len(b) > 0 && json.Unmarshal(b, &st) == nil && st.sameTransfer(key) {
		return sf, &st, nil
	}
	return sf, nil, nil
}

func (sf *stateFile) save(st *transferState) error {
	if sf == nil {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := sf.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("write state file %s: %w", sf.path, err)
	}
	if err := sf.f.Truncate(int64(len(b))); err != nil {
		return fmt.Errorf("write state file %s: %w", sf.path, err)
	}
	return nil
}

func (sf *stateFile) close() {
	if sf != nil {
		_ = sf.f.Close()
	}
}

// remove deletes the state once the transfer is complete.
func (sf *stateFile) remove() {
	if sf != nil {
		_ = sf.f.Close()
		_ = os.Remove(sf.path)
	}
}
