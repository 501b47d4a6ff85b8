package node

import (
	"reflect"
	"strings"
	"testing"

	"github.com/vectis-ft/vectis/config"
	"github.com/vectis-ft/vectis/pesit/server"
	"github.com/vectis-ft/vectis/store"
)

// setOne returns a zero T with only field i set to a non-zero value, or
// false when the field's type is not handled (the test then fails: a new
// type needs a value here).
func setOne[T any](t *testing.T, i int) (T, bool) {
	var v T
	f := reflect.ValueOf(&v).Elem().Field(i)
	switch f.Kind() {
	case reflect.String:
		// Hex survives the fingerprint normalisation.
		f.SetString(strings.Repeat("ab", 32))
	case reflect.Bool:
		f.SetBool(true)
	case reflect.Int, reflect.Int64:
		f.SetInt(7)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return v, false
		}
		f.Set(reflect.ValueOf([]string{strings.Repeat("cd", 32)}).Convert(f.Type()))
	case reflect.Struct:
		if f.Type().String() != "time.Time" {
			return v, false
		}
		return v, true // bookkeeping timestamps are checked by name below
	default:
		return v, false
	}
	return v, true
}

// TestPartnerProjections (issue 14, item 4): every field of a configured
// partner reaches the store, and every field of a stored partner reaches
// the PeSIT server. Adding a field on one side without carrying it makes
// this test fail, naming the field.
func TestPartnerProjections(t *testing.T) {
	// config.Partner -> store.DeclaredPartner.
	ct := reflect.TypeFor[config.Partner]()
	base := declaredPartner(config.Partner{})
	for i := range ct.NumField() {
		name := ct.Field(i).Name
		p, ok := setOne[config.Partner](t, i)
		if !ok {
			t.Fatalf("config.Partner.%s: type %s not handled by the test", name, ct.Field(i).Type)
		}
		if reflect.DeepEqual(declaredPartner(p), base) {
			t.Errorf("config.Partner.%s is not carried to the store", name)
		}
	}
	// store.Partner -> server.Partner. Description and the timestamps
	// are for people, not for the protocol.
	notForServer := map[string]bool{"Description": true, "CreatedAt": true, "UpdatedAt": true}
	st := reflect.TypeFor[store.Partner]()
	comparable := func(p server.Partner) server.Partner { p.VerifyPassword = nil; return p }
	zero := comparable(serverPartner(store.Partner{}, nil))
	for i := range st.NumField() {
		name := st.Field(i).Name
		if notForServer[name] {
			continue
		}
		p, ok := setOne[store.Partner](t, i)
		if !ok {
			t.Fatalf("store.Partner.%s: type %s not handled by the test", name, st.Field(i).Type)
		}
		if name == "Access" {
			p.Access = store.AccessRead
		}
		if reflect.DeepEqual(comparable(serverPartner(p, nil)), zero) {
			t.Errorf("store.Partner.%s is not carried to the PeSIT server", name)
		}
	}
	// Every server.Partner field is fed by the store (none left at its
	// zero value by a full store partner).
	full := store.Partner{ID: "P", Enabled: true, Access: store.AccessBoth, Files: []string{"F"}, MaxSessions: 1,
		CertCN: "cn", CertSHA256: []string{strings.Repeat("ab", 32), strings.Repeat("cd", 32)},
		MultiArticle: true, Segment: true, Strict: true}
	sp := serverPartner(full, func(string) bool { return false })
	sv := reflect.ValueOf(sp)
	for i := range sv.NumField() {
		if sv.Field(i).IsZero() {
			t.Errorf("server.Partner.%s is not fed by the store projection", sv.Type().Field(i).Name)
		}
	}
	if len(sp.CertFingerprints) != 2 {
		t.Errorf("fingerprints %v: every certSHA256 must be kept", sp.CertFingerprints)
	}
}
