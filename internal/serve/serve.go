// Package serve runs an HTTP server until its context ends: the one
// shutdown path of bgd's long-running servers (the builtin proxy and the
// demo app).
package serve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Until serves srv on ln until ctx ends or Serve fails (its error is
// returned). When ctx ends it shuts srv down gracefully: no new
// connections, and requests in flight get up to grace to finish; those
// still running then are cut off (srv.Close), which is not an error.
func Until(ctx context.Context, srv *http.Server, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return srv.Close()
	}
	return err
}
