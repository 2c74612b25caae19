package main

import (
	"context"
	"errors"

	"github.com/fcgishim/fcgishim/shim"
)

func cmdDeploy(ctx context.Context, o shim.Options, args []string) error {
	return errors.New("deploy: not built yet")
}

func cmdInstall(ctx context.Context, o shim.Options, args []string) error {
	return errors.New("install: not built yet")
}

func cmdCheck(ctx context.Context, o shim.Options, args []string) error {
	return errors.New("check: not built yet")
}
