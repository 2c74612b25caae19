package shim

import (
	"context"
	"errors"
	"log/slog"
	"net"
)

// envWorker marks a prefork worker process.
const envWorker = "FCGISHIM_WORKER"

// runPrefork supervises worker processes sharing listeners (runfcgi
// method=prefork). Placeholder until prefork lands.
func runPrefork(ctx context.Context, o Options, listeners []net.Listener, log *slog.Logger) error {
	return errors.New("prefork: not built yet; use method=threaded")
}
