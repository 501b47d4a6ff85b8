package fsm_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/vectis-ft/vectis/pesit/fpdu"
	"github.com/vectis-ft/vectis/pesit/fsm"
)

// A server session loop: read an FPDU, let the machine judge it, answer
// what is owed, record every FPDU sent. Here the peer connects and releases.
func Example_responder() {
	var in bytes.Buffer
	for _, f := range []*fpdu.FPDU{
		fpdu.New(fpdu.Connect, 0, 0x62,
			fpdu.Param{ID: fpdu.PIRequesterID, Value: []byte("CXCLIENT")},
			fpdu.Param{ID: fpdu.PIServerID, Value: []byte("PESITSRV")},
			fpdu.Param{ID: fpdu.PIVersion, Value: []byte{2}},
			fpdu.Param{ID: fpdu.PISyncOption, Value: []byte{0x00, 0x20, 0x02}},
			fpdu.Param{ID: fpdu.PIAccessType, Value: []byte{2}}),
		fpdu.New(fpdu.Release, 0xE2, 0x62, fpdu.Param{ID: fpdu.PIDiagnostic, Value: []byte{0, 0, 0}}),
	} {
		b, _ := fpdu.AppendEncode(nil, f)
		in.Write([]byte{byte(len(b) >> 8), byte(len(b))})
		in.Write(b)
	}

	r, m := fpdu.NewReader(&in), fsm.NewResponder()
	send := func(f *fpdu.FPDU) {
		if err := m.Sent(f); err != nil {
			panic(err) // a bug in the server, not the peer
		}
		fmt.Printf("  sent %v, now %v\n", f.Kind, m.State())
		// ... write f to the connection
	}
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			d, _ := fpdu.DiagnosticOf(err)
			send(fpdu.NewAbort(0x62, 0xE2, d))
			return
		}
		act, err := m.Received(f)
		if v, ok := fsm.IsViolation(err); ok {
			send(fpdu.NewAbort(0x62, 0xE2, v.Diag))
			return
		}
		fmt.Printf("received %v: %v, now %v\n", f.Kind, act, m.State())
		if act != fsm.Answer {
			continue
		}
		switch k, _ := m.Owed(); k {
		case fpdu.AConnect:
			v, ok := f.Params.Bytes(fpdu.PISyncOption)
			o, _ := fsm.NegotiateSync(v, ok, fsm.SyncOption{IntervalKB: 32, Window: 2})
			b := o.Bytes()
			send(fpdu.New(fpdu.AConnect, 0x62, 0xE2,
				fpdu.Param{ID: fpdu.PIVersion, Value: []byte{fsm.VersionE}},
				fpdu.Param{ID: fpdu.PISyncOption, Value: b[:]}))
		case fpdu.RelConf:
			send(fpdu.New(fpdu.RelConf, 0x62, 0xE2))
		}
	}
	// Output:
	// received CONNECT: answer, now CN02B
	//   sent ACONNECT, now CN03
	// received RELEASE: answer, now CN04B
	//   sent RELCONF, now CN01
}
