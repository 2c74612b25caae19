package deploy

import (
	"context"

	"github.com/fcgishim/fcgishim/config"
)

func (c *checker) probe(ctx context.Context, cfg *config.Config) {}
