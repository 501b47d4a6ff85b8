package client

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// ArticleFormat is PI 31. The zero value is variable, which is what
// Connect:Express and most peers use for binary files too: articles of at
// most the article length.
type ArticleFormat uint8

// Article formats.
const (
	FormatVariable ArticleFormat = iota // PI 31 = 0x80
	FormatFixed                         // PI 31 = 0x00: articles of exactly the article length (the last may be shorter)
)

func (f ArticleFormat) wire() byte {
	if f == FormatFixed {
		return 0x00
	}
	return 0x80
}

// DataCode is PI 16. The zero value is binary.
type DataCode uint8

// Data codes.
const (
	DataBinary DataCode = iota // PI 16 = 2
	DataASCII                  // PI 16 = 0
	DataEBCDIC                 // PI 16 = 1
)

func (d DataCode) wire() uint64 {
	switch d {
	case DataASCII:
		return 0
	case DataEBCDIC:
		return 1
	}
	return 2
}

func dataCodeFromWire(v uint64) DataCode {
	switch v {
	case 0:
		return DataASCII
	case 1:
		return DataEBCDIC
	}
	return DataBinary
}

// text reports whether variable-format articles are lines: one article per
// line, without its end-of-line, which the receiver adds back ("\n").
func (d DataCode) text() bool { return d != DataBinary }

// Defaults of the data path.
const (
	// DefaultEntitySize is the PI 25 proposal; the server answers at most this.
	DefaultEntitySize = 65535
	// DefaultArticleLength is PI 32 when not configured: large enough for
	// text lines and for efficient binary blocks, and a divisor of the sync
	// intervals people use (it is lowered to the interval when smaller).
	DefaultArticleLength = 32768
	// maxArticleLength is the largest value PI 32 (2 bytes) can carry.
	maxArticleLength = 65535
)

// Progress reports how far a transfer is.
type Progress struct {
	Bytes int64 // local file bytes done
	Total int64 // local file size when known (send), else the server's announced size or 0
}

// position is where a transfer stands, push or pull, and its restart state.
type position struct {
	fileOff  int64 // local file bytes done
	bytes    int64 // data bytes (PI 27 units), whole file
	articles int64 // articles (PI 28), whole file
	total    int64 // the local file's size (push), the size announced (pull)
	st       *transferState
	sf       *stateFile
}

// progressMeter calls fn, when set, at most every 100 ms, and always with
// the final report.
type progressMeter struct {
	fn   func(Progress)
	last time.Time
}

func (m *progressMeter) report(p Progress, final bool) {
	if m.fn == nil {
		return
	}
	now := time.Now()
	if !final && now.Sub(m.last) < 100*time.Millisecond {
		return
	}
	m.last = now
	m.fn(p)
}

// Result describes a completed transfer.
type Result struct {
	TransferID uint32 // PI 13 of the transfer
	FileBytes  int64  // bytes of the local file
	DataBytes  int64  // PI 27: data bytes exchanged, whole file
	Articles   int64  // PI 28: articles, whole file
	Restarted  bool   // the transfer resumed an interrupted one
	// Abandoned is the PI 13 of an interrupted transfer given up for a
	// fresh start (SendRequest.StartOver); 0 when none was.
	Abandoned    uint32
	RestartPoint uint32        // sync point the last attempt resumed from (0: start of file)
	SyncPoints   uint32        // number of the last sync point of the transfer
	Attempts     int           // connections used (Push/Pull)
	ConnectTime  time.Duration // CONNECT to ACONNECT of the last connection (Push/Pull)
	Duration     time.Duration // of the last attempt
	// Anomalies lists the peer's tolerated deviations (docs/interop.md).
	Anomalies []Anomaly
}

// newTransferID draws a non-zero 24-bit PI 13.
func newTransferID() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := binary.BigEndian.Uint32(b[:]) & 0xFFFFFF
	if id == 0 {
		id = 1
	}
	return id
}
