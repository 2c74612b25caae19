package main

import (
	"context"
	"errors"

	"github.com/fcgishim/fcgishim/shim"
)

func cmdRunfcgi(ctx context.Context, o shim.Options, args []string) error {
	return errors.New("runfcgi: not built yet")
}

func cmdStop(ctx context.Context, o shim.Options, args []string) error {
	return errors.New("stop: not built yet")
}
