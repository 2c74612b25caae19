package handler

import (
	"context"
	"errors"
	"net/http"
)

// app is the reverse proxy to the supervised child app. (Placeholder until
// the app capability lands.)
type app struct{ http.Handler }

func (a *app) Close(context.Context) error { return nil }

func newApp(o Options) (*app, error) {
	return nil, errors.New("[app] is not supported by this build yet")
}
