package client

import (
	"cmp"

	"github.com/vectis-ft/vectis/pesit/fpdu"
)

// The file phases shared by push and pull: ORF, CRF, DESELECT.

// openFile sends ORF (no compression) and waits for ACK(ORF).
func (s *Session) openFile() error {
	if err := s.write(fpdu.NewORF(s.peer)); err != nil {
		return err
	}
	f, err := s.expectOK(fpdu.AckORF)
	if err != nil {
		return err
	}
	if b, ok := f.Params.Bytes(fpdu.PICompression); ok && len(b) > 0 && b[0] != 0 {
		return s.protocolError(fpdu.DiagCompressionRefused, "server imposed compression we did not propose")
	}
	return nil
}

// closeFile sends CRF and DESELECT (which cannot be refused) after a
// transfer, whatever its outcome; cause, when not nil, is the error that
// ended the transfer and is returned in preference to a later one. What the
// server sent before it saw our IDT or ACK(IDT) the machine ignores.
func (s *Session) closeFile(cause error) error {
	if err := s.request(fpdu.CRF, fpdu.AckCRF); err != nil {
		return cmp.Or(cause, err)
	}
	return s.deselect(cause)
}

// deselect sends DESELECT after a CREATE or SELECT that succeeded, once the
// transfer is over or will not happen.
func (s *Session) deselect(cause error) error {
	return cmp.Or(cause, s.request(fpdu.Deselect, fpdu.AckDeselect))
}

// request sends k{PI 2 = 0} and waits for its answer; on a broken session
// it does nothing, the error that broke it has been returned.
func (s *Session) request(k, answer fpdu.Kind) error {
	if s.broken {
		return nil
	}
	err := s.write(fpdu.NewDiag(k, s.peer, fpdu.DiagOK))
	if err == nil {
		_, err = s.expect(answer)
	}
	return err
}
