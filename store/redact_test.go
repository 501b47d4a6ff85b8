package store_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vectis-ft/vectis/store"
)

// Regression for issue 16 defect 9: the error of a failed start-up (which
// the node logs) never holds the database password, in any form pgx
// accepts: URL user info, URL query, keyword/value with or without quotes.
func TestOpenErrorHidesPasswordInEveryForm(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close() // nothing listens there now
	for name, dsn := range map[string]string{
		"userinfo":          "postgres://vectis:hunter2@" + host + ":" + port + "/vectis?sslmode=disable",
		"query":             "postgres://vectis@" + host + ":" + port + "/vectis?sslmode=disable&password=hunter2",
		"query first":       "postgresql://" + host + ":" + port + "/vectis?password=hunter2&user=vectis",
		"query upper case":  "postgres://vectis@" + host + ":" + port + "/vectis?PASSWORD=hunter2",
		"keyword":           "host=" + host + " port=" + port + " user=vectis password=hunter2 dbname=vectis sslmode=disable",
		"keyword quoted":    "host=" + host + " port=" + port + " user=vectis password='hunter2 with spaces' dbname=vectis",
		"keyword spaced":    "host=" + host + " port=" + port + " password = hunter2 user=vectis",
		"keyword escaped":   `host=` + host + ` port=` + port + ` password='hunter2\'s' user=vectis`,
		"keyword sslpasswd": "host=" + host + " port=" + port + " user=vectis sslpassword=hunter2",
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := store.Open(ctx, store.Config{URL: dsn, ConnectTimeout: time.Second})
			if err == nil {
				t.Fatal("open against a closed port succeeded")
			}
			if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrInvalid) {
				t.Errorf("error %v, want unavailable or invalid", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error discloses the password: %v", err)
			}
		})
	}
}
