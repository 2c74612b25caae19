package handler

import (
	"errors"
	"net/http"
)

func newStatic(o Options, next http.Handler) (http.Handler, error) {
	return nil, errors.New("[static] is not supported by this build yet")
}
