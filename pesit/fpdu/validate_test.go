package fpdu

import (
	"errors"
	"strings"
	"testing"
)

// without returns a copy of f without PI id (searched at every level).
func without(f *FPDU, id PI) *FPDU {
	g := *f
	g.Params = drop(f.Params, id)
	return &g
}

func drop(p Params, id PI) Params {
	var out Params
	for _, u := range p {
		if u.ID == id {
			continue
		}
		if u.ID.IsGroup() {
			u.Group = drop(u.Group, id)
		}
		out = append(out, u)
	}
	return out
}

func TestValidateMandatory(t *testing.T) {
	cases := []struct {
		k     Kind
		id    PI
		group PI
	}{
		{Connect, PIRequesterID, 0}, {Connect, PIServerID, 0}, {Connect, PIVersion, 0}, {Connect, PIAccessType, 0},
		{AConnect, PIVersion, 0}, {RConnect, PIDiagnostic, 0}, {Release, PIDiagnostic, 0}, {Abort, PIDiagnostic, 0},
		{Create, PGIFileID, 0}, {Create, PIFileName, PGIFileID}, {Create, PIFileType, PGIFileID},
		{Create, PITransferID, 0}, {Create, PIPriority, 0}, {Create, PIEntitySize, 0},
		{Create, PIArticleLength, PGILogical}, {Create, PISpaceMax, PGIPhysical}, {Create, PICreated, PGIHistorical},
		{Create, PGIHistorical, 0},
		{AckCreate, PIEntitySize, 0}, {Select, PITransferID, 0}, {Select, PIFileName, PGIFileID},
		{AckSelect, PITransferID, 0}, {AckSelect, PGILogical, 0},
		{Read, PIRestartPoint, 0}, {AckWrite, PIRestartPoint, 0}, {Syn, PISyncNumber, 0}, {AckSyn, PISyncNumber, 0},
		{Resyn, PIRestartPoint, 0}, {AckResyn, PIRestartPoint, 0}, {DTFEnd, PIDiagnostic, 0}, {CRF, PIDiagnostic, 0},
		{Msg, PITransferID, 0}, {MsgFM, PIMessage, 0}, {AckMsg, PIDiagnostic, 0},
	}
	for _, c := range cases {
		f := without(sample(c.k), c.id)
		err := Validate(f)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.PI != c.id || pe.Group != c.group || pe.Reason != "missing" {
			t.Errorf("%s without %s: %v", c.k, c.id, err)
			continue
		}
		if !errors.Is(err, DiagBadParameter) {
			t.Errorf("%s: does not wrap 3/318", c.k)
		}
		if !strings.Contains(err.Error(), c.id.String()) {
			t.Errorf("error does not name the PI: %v", err)
		}
	}
	// Optional parameters may go.
	for _, c := range []struct {
		k  Kind
		id PI
	}{{Connect, PIAccessControl}, {Connect, PISyncOption}, {Create, PIDataCode}, {Create, PIRequesterID},
		{Select, PIAttributes}, {Select, PIFreeMessage}, {TransEnd, PIByteCount}, {AckCreate, PITransferID}} {
		if err := Validate(without(sample(c.k), c.id)); err != nil {
			t.Errorf("%s without optional %s: %v", c.k, c.id, err)
		}
	}
	// IDT: either PI 2 or PI 19 may be missing, not both.
	if err := Validate(without(sample(IDT), PIDiagnostic)); err != nil {
		t.Error(err)
	}
	if err := Validate(without(sample(IDT), PIEndCode)); err != nil {
		t.Error(err)
	}
	if err := Validate(without(without(sample(IDT), PIEndCode), PIDiagnostic)); !errors.Is(err, DiagBadParameter) {
		t.Errorf("IDT without 2 and 19: %v", err)
	}
	// A negative acknowledgement needs only its diagnostic.
	neg := &FPDU{Kind: AckSelect, DstID: 0x62}
	neg.Params.AddDiagnostic(DiagFileNotFound)
	if err := Validate(neg); err != nil {
		t.Errorf("refused SELECT: %v", err)
	}
	neg.Params[0].Value = []byte{0, 0, 0}
	if err := Validate(neg); !errors.Is(err, DiagBadParameter) {
		t.Errorf("positive ACK(SELECT) without attributes: %v", err)
	}
}

func TestValidateValues(t *testing.T) {
	set := func(k Kind, id PI, v []byte) *FPDU {
		f := sample(k)
		for i := range f.Params {
			if f.Params[i].ID == id {
				f.Params[i].Value = v
				return f
			}
			for j := range f.Params[i].Group {
				if f.Params[i].Group[j].ID == id {
					g := append(Params(nil), f.Params[i].Group...)
					g[j].Value = v
					f.Params[i].Group = g
					return f
				}
			}
		}
		f.Params.Add(id, v)
		return f
	}
	bad := []struct {
		name string
		f    *FPDU
	}{
		{"PI 7 on 1 byte", set(Connect, PISyncOption, []byte{0})},
		{"PI 2 on 2 bytes", set(AckCreate, PIDiagnostic, []byte{0, 0})},
		{"PI 3 too long", set(Connect, PIRequesterID, []byte(strings.Repeat("X", 25)))},
		{"PI 5 too long", set(Connect, PIAccessControl, []byte(strings.Repeat("X", 17)))},
		{"PI 5 not ASCII", set(Connect, PIAccessControl, []byte{0xC1})},
		{"PI 6 two significant bytes", set(Connect, PIVersion, []byte{1, 2})},
		{"PI 13 too big", set(Create, PITransferID, []byte{1, 0, 0, 0})},
		{"PI 12 too long", set(Create, PIFileName, []byte(strings.Repeat("f", 77)))},
		{"PI 51 not a date", set(Create, PICreated, []byte("26011901250X"))},
		{"PI 51 short", set(Create, PICreated, []byte("2601190125"))},
		{"PI 22 two bytes", set(Connect, PIAccessType, []byte{0, 2})},
		{"PI 21 one byte", set(ORF, PICompression, []byte{0})},
		{"PI 99 too long", set(RConnect, PIFreeMessage, []byte(strings.Repeat(" ", 255)))},
		{"PI 91 too long", set(Msg, PIMessage, []byte(strings.Repeat("m", 4097)))},
		{"empty value", set(Syn, PISyncNumber, []byte{})},
		{"PI as group", &FPDU{Kind: CRF, DstID: 1, Params: Params{{ID: PIDiagnostic, Group: Params{{ID: 1, Value: []byte{0}}}}}}},
		{"PGI as PI", &FPDU{Kind: Create, DstID: 1, Params: Params{{ID: PGIFileID, Value: []byte{1}}}}},
		{"repeated by hand", &FPDU{Kind: Syn, DstID: 1, Params: Params{{ID: 20, Value: []byte{1}}, {ID: 20, Value: []byte{2}}}}},
	}
	for _, c := range bad {
		err := Validate(c.f)
		var pe *ParamError
		if !errors.As(err, &pe) || !errors.Is(err, DiagBadParameter) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Lenient where peers are: PI 13 on 3 bytes with a leading zero, PI 6
	// with a leading zero, an unknown PI.
	ok := []*FPDU{
		set(Create, PITransferID, []byte{0, 0x24, 0xC9}),
		set(Connect, PIVersion, []byte{0, 2}),
		set(Connect, 200, []byte("proprietary")),
	}
	for _, f := range ok {
		if err := Validate(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if err := Validate(&FPDU{Kind: Kind(0x4099)}); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("unknown kind: %v", err)
	}
	if err := Validate(&FPDU{Kind: DTFDA}); err == nil {
		t.Error("empty DTFDA")
	}
	if err := Validate(&FPDU{Kind: Syn, Params: sample(Syn).Params, Data: []byte{1}}); err == nil {
		t.Error("SYN with data")
	}
	// The password never appears in a validation error.
	err := Validate(set(Connect, PIAccessControl, []byte("s3cr\xE9t")))
	if err == nil || strings.Contains(err.Error(), "s3cr") || strings.Contains(err.Error(), "E9") {
		t.Errorf("PI 5 error: %v", err)
	}
}

func TestValidateIDs(t *testing.T) {
	ids := func(k Kind, dst, src byte) *FPDU {
		f := sample(k)
		f.DstID, f.SrcID = dst, src
		return f
	}
	good := []*FPDU{
		ids(Connect, 0, 0x62), ids(AConnect, 0x62, 0xE2), ids(RConnect, 0x62, 0), ids(Release, 0xE2, 0x62),
		ids(RelConf, 0x62, 0xE2), ids(Abort, 0, 0x61), ids(Abort, 1, 0x62), ids(Create, 0xE2, 0),
		ids(DTF, 0xE2, 3), ids(DTFDA, 0xE2, 0), ids(Syn, 0xE2, 0),
	}
	for _, f := range good {
		if err := Validate(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	bad := []*FPDU{
		ids(Connect, 1, 0x62), ids(Connect, 0, 0), ids(AConnect, 0x62, 0), ids(AConnect, 0, 0xE2),
		ids(Release, 0, 0x62), ids(RelConf, 0x62, 0), ids(Abort, 1, 0), ids(Create, 0, 0),
		ids(DTF, 0, 3), ids(AckSyn, 0, 0),
	}
	for _, f := range bad {
		err := Validate(f)
		if !errors.Is(err, ErrBadID) || !errors.Is(err, DiagProtocolError) {
			t.Errorf("%s: %v", f, err)
		}
	}
}
