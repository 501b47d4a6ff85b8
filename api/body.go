package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// decodeJSON reads exactly one JSON object into v. It refuses a content type
// other than application/json (415: a browser cannot send that cross-site
// without a preflight), unknown fields (400), duplicate keys (400: which one
// wins differs between parsers, so a proxy or a log may see another value
// than Vectis), malformed JSON (400, without echoing the input, which may
// hold a password) and oversized bodies (413).
func decodeJSON(r *http.Request, v any) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || mt != "application/json" {
		return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedMedia, "Content-Type must be application/json")
	}
	// The body is bounded (MaxBytesReader) before any handler runs.
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return jsonError(err)
	}
	if key, dup := duplicateKey(data); dup {
		return badRequest("duplicate key %q in the JSON body", truncate(key))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err)
		}
		return badRequest("request body must hold a single JSON object")
	}
	return nil
}

// duplicateKey finds a key given twice in one object of a JSON document,
// compared without case as encoding/json matches fields. Malformed JSON is
// left to the decoder's error.
func duplicateKey(data []byte) (string, bool) {
	type frame struct {
		keys      map[string]bool // nil for an array
		expectKey bool
	}
	var stack []*frame
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].expectKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].expectKey {
			if k, ok := tok.(string); ok {
				fk := strings.ToLower(k)
				if stack[n-1].keys[fk] {
					return k, true
				}
				stack[n-1].keys[fk] = true
				stack[n-1].expectKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			if len(stack) == 0 {
				return "", false
			}
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

func jsonError(err error) error {
	var (
		mbe  *http.MaxBytesError
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		msg  = err.Error()
		code = CodeBadRequest
	)
	switch {
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		msg = "request body is empty; a JSON object is expected"
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "request body is truncated JSON"
	case errors.As(err, &syn):
		msg = fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		msg = fmt.Sprintf("field %q must be a JSON %s", typ.Field, typ.Type.Kind())
		code = CodeInvalid
	case strings.HasPrefix(msg, "json: unknown field "):
		msg = "unknown field " + strings.TrimPrefix(msg, "json: unknown field ")
		code = CodeInvalid
	default:
		msg = "malformed JSON"
	}
	return errorf(http.StatusBadRequest, code, "%s", msg)
}

// query helpers: a bad value is a 400 naming the parameter.

func queryTime(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest("query parameter %s=%q: want an RFC 3339 time such as 2026-01-31T12:00:00Z", name, truncate(v))
	}
	return t, nil
}

func queryLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, badRequest("query parameter limit=%q: want a number from 1 to 1000", truncate(v))
	}
	return n, nil
}

// page is the body of a paginated list; Next is empty on the last page.
type page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// writePage answers a paginated list: the query's limit and cursor go to
// fetch, and the items go out as [] rather than null when there are none.
// what names the items in an error.
func writePage[T any](w http.ResponseWriter, r *http.Request, what string,
	fetch func(ctx context.Context, limit int, cursor string) ([]T, string, error)) error {
	limit, err := queryLimit(r)
	if err != nil {
		return err
	}
	cursor, err := queryCursor(r)
	if err != nil {
		return err
	}
	items, next, err := fetch(r.Context(), limit, cursor)
	if err != nil {
		return storeError(err, what)
	}
	writeJSON(w, http.StatusOK, page[T]{Items: orEmpty(items), Next: next})
	return nil
}

// orEmpty makes a nil list an empty one, so that JSON says [] and not null.
func orEmpty[T any](items []T) []T {
	if items == nil {
		return []T{}
	}
	return items
}

func queryCursor(r *http.Request) (string, error) {
	v := r.URL.Query().Get("cursor")
	if len(v) > 512 {
		return "", badRequest("query parameter cursor is too long")
	}
	return v, nil
}
