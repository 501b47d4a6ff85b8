package api

import (
	"context"
	"net/http"

	"github.com/vectis-ft/vectis/store"
)

// objectKind is one kind of configuration object (partner, virtual file,
// server) as the REST API manages it. The list, get, create, update and
// delete handlers are written once, here; a kind gives its store calls and
// the few rules that are its own, so that the three kinds answer with the
// same status codes, errors, audit events and Location headers.
type objectKind[T any, In objectInput[T]] struct {
	api    *API
	name   string // in messages: "virtual file"
	plural string // the collection in messages: "virtual files"
	action string // the prefix of its audit actions: "file"
	path   string // the collection's URL: "/api/v1/files"
	maxID  int
	id     func(T) string

	load   func(context.Context) ([]T, error)
	fetch  func(ctx context.Context, id string) (T, error)
	insert func(context.Context, In, T) (T, error)
	save   func(context.Context, T) (T, error)
	remove func(ctx context.Context, id string) error

	// view is the JSON shape of an object; the object itself when nil.
	view func(T) any
	// checkInsert refuses a valid object that cannot be created as asked
	// (a partner without a password or certificate).
	checkInsert func(In, T) error
	// checkSave refuses a body that cannot update (a partner's password,
	// which has its own endpoint), before the body is validated.
	checkSave func(id string, in In) error
	// check refuses a valid object on create and update (a virtual file
	// outside the file root).
	check func(T) error
	// saved runs after a successful update (a server's listeners follow
	// its definition on the leader).
	saved func(ctx context.Context, id string)
}

// objectInput is the body of POST and PUT for one kind: it names the id it
// carries and builds the validated object under a given id.
type objectInput[T any] interface {
	bodyID() string
	object(id string) (T, error)
}

// ignoreInput adapts a store's create, which needs the object only, to
// objectKind.insert.
func ignoreInput[In, T any](create func(context.Context, T) (T, error)) func(context.Context, In, T) (T, error) {
	return func(ctx context.Context, _ In, obj T) (T, error) { return create(ctx, obj) }
}

func (k *objectKind[T, In]) show(obj T) any {
	if k.view == nil {
		return obj
	}
	return k.view(obj)
}

func (k *objectKind[T, In]) list(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	objs, err := k.load(r.Context())
	if err != nil {
		return storeError(err, k.plural)
	}
	out := make([]any, 0, len(objs))
	for _, obj := range objs {
		out = append(out, k.show(obj))
	}
	writeJSON(w, http.StatusOK, newList(out))
	return nil
}

func (k *objectKind[T, In]) get(w http.ResponseWriter, r *http.Request, _ *Principal) error {
	id, err := pathID(r, k.name, k.maxID)
	if err != nil {
		return err
	}
	obj, err := k.fetch(r.Context(), id)
	if err != nil {
		return storeError(err, k.name+" "+quote(id))
	}
	writeJSON(w, http.StatusOK, k.show(obj))
	return nil
}

func (k *objectKind[T, In]) create(w http.ResponseWriter, r *http.Request, who *Principal) error {
	var in In
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	id := in.bodyID()
	obj, err := k.build(in, id)
	if err != nil {
		return err
	}
	if k.checkInsert != nil {
		if err := k.checkInsert(in, obj); err != nil {
			return err
		}
	}
	created, err := k.insert(r.Context(), in, obj)
	if err := k.audited(r.Context(), who, "create", id, err); err != nil {
		return err
	}
	w.Header().Set("Location", k.path+"/"+k.id(created))
	writeJSON(w, http.StatusCreated, k.show(created))
	return nil
}

func (k *objectKind[T, In]) update(w http.ResponseWriter, r *http.Request, who *Principal) error {
	id, err := pathID(r, k.name, k.maxID)
	if err != nil {
		return err
	}
	var in In
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if k.checkSave != nil {
		if err := k.checkSave(id, in); err != nil {
			return err
		}
	}
	if err := bodyID(id, in.bodyID(), k.name); err != nil {
		return err
	}
	obj, err := k.build(in, id)
	if err != nil {
		return err
	}
	updated, err := k.save(r.Context(), obj)
	if err := k.audited(r.Context(), who, "update", id, err); err != nil {
		return err
	}
	if k.saved != nil {
		k.saved(r.Context(), id)
	}
	writeJSON(w, http.StatusOK, k.show(updated))
	return nil
}

func (k *objectKind[T, In]) delete(w http.ResponseWriter, r *http.Request, who *Principal) error {
	id, err := pathID(r, k.name, k.maxID)
	if err != nil {
		return err
	}
	if err := k.audited(r.Context(), who, "delete", id, k.remove(r.Context(), id)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// build turns a body into a valid object under id, checked by the kind's
// own rule.
func (k *objectKind[T, In]) build(in In, id string) (T, error) {
	obj, err := in.object(id)
	if err != nil || k.check == nil {
		return obj, err
	}
	return obj, k.check(obj)
}

// audited records the outcome of a write to object id and turns the store's
// error into the API's.
func (k *objectKind[T, In]) audited(ctx context.Context, who *Principal, verb, id string, err error) error {
	action := k.action + "." + verb
	if err != nil {
		k.api.audit(ctx, who, action, id, store.OutcomeFailure, errDetail(err))
		return storeError(err, k.name+" "+quote(id))
	}
	k.api.audit(ctx, who, action, id, store.OutcomeSuccess, "")
	return nil
}
