package nginx

import (
	"bytes"
	"fmt"

	"github.com/bgd-dev/bgd/config"
)

// Shadow traffic with nginx: while a route asks for it (lb.Route.Shadow),
// the default template adds `mirror` to the service's location, with an
// internal location that proxies the copy to the standby slot and whose
// answer nginx discards. `mirror_request_body on` copies the body, which
// nginx then reads in full before proxying (client_body_buffer_size
// shadowBodyBuffer keeps bodies up to that size in memory, larger ones go
// to a temporary file). The client's answer is sent as soon as the active
// slot gives it, but nginx finishes the request only when the copy is
// answered too: on a keep-alive connection the client's next request
// waits for the copy of the previous one (measured in the integration
// tests); the copy's timeouts (shadowTimeout) bound that wait.

// ShadowPath is the internal location of the copies.
const ShadowPath = "/_bgd_shadow"

// shadowBodyBuffer is the client_body_buffer_size of a mirrored location.
const shadowBodyBuffer = "64k"

// shadowTimeout bounds the connection, each read and each write of a copy.
const shadowTimeout = "2s"

// checkShadow makes sure that a template asked for shadow traffic writes a
// mirror to the standby: a template written before shadow traffic existed
// would copy nothing and say nothing.
func (b *Balancer) checkShadow(d Data, out []byte) error {
	if !d.Shadow {
		return nil
	}
	if !bytes.Contains(out, []byte("mirror ")) || !bytes.Contains(out, []byte(d.Standby.Addr)) {
		return fmt.Errorf("%w: service %q: %s renders no `mirror` to the standby (%s) for shadow traffic: a template that copies requests writes `mirror` and a location proxying to {{.Standby.Addr}} when {{.Shadow}} is true (see the default template)",
			config.ErrInvalid, b.service, b.tmpl.Name(), d.Standby.Addr)
	}
	return nil
}
