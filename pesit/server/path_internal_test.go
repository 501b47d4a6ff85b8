package server

import (
	"errors"
	"testing"
	"time"
)

func TestCheckFileID(t *testing.T) {
	for _, ok := range []string{"TESTFILE", "a.b", "FILE-1_2", "x", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCD"} {
		if err := checkFileID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", `a\b`, "a..b", "a b", "c:x", "x\x00", "\xe9t\xe9",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDE"} {
		if err := checkFileID(bad); !errors.Is(err, errBadFileName) {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}

func TestExpandName(t *testing.T) {
	v := nameVars{Partner: "CXCLIENT", File: "TESTFILE", TransferID: 9417, Now: time.Date(2026, 1, 19, 1, 25, 5, 0, time.UTC), UUID: "u-1"}
	for pattern, want := range map[string]string{
		"":                                      "TESTFILE",
		"${file}":                               "TESTFILE",
		"${partner}/${file}":                    "CXCLIENT/TESTFILE",
		"${date}-${time}-${file}.${transferId}": "20260119-012505-TESTFILE.9417",
		"in/${uuid}.dat":                        "in/u-1.dat",
		"a/./b/../${file}":                      "a/TESTFILE",
	} {
		got, err := expandName(pattern, v)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", pattern, got, err, want)
		}
	}
	for _, bad := range []string{"../${file}", "/abs/${file}", "${nope}", "${file", "x/../../y", ".hidden", "${partner}/.x"} {
		if got, err := expandName(bad, v); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config { c := Config{ID: "SRV", Addr: "127.0.0.1:0"}; c.setDefaults(); return c }
	if err := func() error { c := base(); return c.validate() }(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no id":            func(c *Config) { c.ID = "" },
		"long id":          func(c *Config) { c.ID = "ABCDEFGHIJKLMNOPQRSTUVWXY" },
		"no address":       func(c *Config) { c.Addr = "" },
		"tls without cert": func(c *Config) { c.TLSAddr = "127.0.0.1:0" },
		"entity":           func(c *Config) { c.MaxEntitySize = 70000 },
		"negative timer":   func(c *Config) { c.IdleTimeout = -1 },
	} {
		c := base()
		mod(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Config{ID: "SRV", Addr: "127.0.0.1:0"}, Deps{}); err == nil {
		t.Error("New without Directory and Journal accepted")
	}
}
