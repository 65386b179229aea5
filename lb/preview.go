package lb

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// PreviewHeader is the request header that asks for the preview route: a
// request carrying "X-Bgd-Preview: 1" from a loopback client goes to the
// route's Standby slot, so that a release started there (bgd deploy
// --no-switch) can be tried on the real path before any flip. A client
// that is not on loopback is routed as if it had not sent the header.
const PreviewHeader = "X-Bgd-Preview"

// SlotHeader is the answer header by which every driver names the colour
// whose slot answered the request; bgd's smoke check reads it to make sure
// a preview answer came from the standby, not from the active slot of a
// load balancer whose configuration lacks the preview rule.
const SlotHeader = "X-Bgd-Slot"

// FeaturePreview is what a driver (or its configuration) without a
// preview route lacks; health.smoke needs it.
const FeaturePreview Feature = "the preview route (health.smoke)"

// Previewer is a Balancer with a preview route to the standby slot.
type Previewer interface {
	Balancer
	// PreviewURL is the URL of path on the load balancer's own listener,
	// as a client on this host reaches it (loopback); a request to it with
	// PreviewHeader goes to the standby slot. An error says what in the
	// configuration leaves the listener unknown.
	PreviewURL(path string) (string, error)
}

// PreviewPreparer is a Previewer whose preview route is state the load
// balancer keeps apart from its configuration (HAProxy's map entry): bgd
// asks it to point the preview route at r.Standby before it uses it. r is
// the routing in force, generation included.
type PreviewPreparer interface {
	Previewer
	PreparePreview(ctx context.Context, r Route) error
}

// LoopbackURL is the http URL of path on a listener given as a port
// ("80"), ":port" or host:port, as a client on this host reaches it: a
// wildcard address (none, 0.0.0.0, [::]) is reached on loopback.
func LoopbackURL(listen, path string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		if _, perr := strconv.Atoi(listen); perr != nil {
			return "", fmt.Errorf("listen address %q is neither a port nor host:port", listen)
		}
		host, port = "", listen
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("listen address %q has no port in 1-65535", listen)
	}
	switch host {
	case "", "0.0.0.0", "*":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("path %q does not start with /", path)
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}
