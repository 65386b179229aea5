package builtin

import (
	"fmt"
	"net/http"

	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// The preview route: a loopback client's request with "X-Bgd-Preview: 1"
// goes to the standby slot of the state file, whatever the routing (a
// canary split included), so that a release started there can be tried
// through the proxy before any flip. Its answer carries X-Bgd-Slot of the
// standby like any other. Any other client's header is ignored.

// previewSide is the standby slot of st as a side of the routing, nil
// when the state records no port for it.
func previewSide(st *state.State) *side {
	c := st.ActiveVersion.Other()
	if !c.Valid() {
		return nil
	}
	sl := st.Slot(c)
	if sl.Port == 0 {
		return nil
	}
	return &side{color: c, port: sl.Port, pid: sl.PID}
}

// samePreview reports whether u and v preview the same standby process.
func (u *upstream) samePreview(v *upstream) bool {
	if u.preview == nil || v.preview == nil {
		return u.preview == v.preview
	}
	return u.preview.color == v.preview.color && u.preview.port == v.preview.port && u.preview.pid == v.preview.pid
}

// previewed is the side that serves r when r asks for the preview route
// from loopback, nil otherwise (the routing picks as usual).
func (u *upstream) previewed(r *http.Request) *side {
	if u.preview == nil || r.Header.Get(lb.PreviewHeader) != "1" || !isLoopback(r.RemoteAddr) {
		return nil
	}
	return u.preview
}

var _ lb.Previewer = (*Balancer)(nil)

// PreviewURL is path on the proxy's listen address (a wildcard one reached
// on loopback).
func (b *Balancer) PreviewURL(path string) (string, error) {
	u, err := lb.LoopbackURL(b.Listen, path)
	if err != nil {
		return "", fmt.Errorf("builtin proxy: lb.builtin.listen: %w", err)
	}
	return u, nil
}
