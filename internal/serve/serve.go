// Package serve runs an HTTP server until its context ends: the shutdown
// path of bgd's long-running net/http servers (the builtin proxy's admin
// address and the demo app). The proxy's service port has a front end of
// its own (lb/builtin/front.go) that shuts down the same way.
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
