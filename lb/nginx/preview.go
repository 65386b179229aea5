package nginx

import (
	"bytes"
	"context"
	"fmt"
	"net/url"

	"github.com/bgd-dev/bgd/lb"
)

// The default template writes the preview route: an upstream
// bgd_<service>_preview holding the standby slot, chosen for a request
// with "X-Bgd-Preview: 1" from a loopback address (a geo on
// $remote_addr), and X-Bgd-Slot naming the standby on its answers. Since
// the file is rewritten at every flip, the preview always leads to the
// standby of the generation nginx serves.

var _ lb.PreviewPreparer = (*Balancer)(nil)

// PreviewURL is path on verify_url's scheme, host and port: where bgd
// already reaches nginx's server for this service. A template without the
// preview route (it never reads $http_x_bgd_preview) is refused with
// lb.ErrUnsupported.
func (b *Balancer) PreviewURL(path string) (string, error) {
	u, err := url.Parse(b.cfg.VerifyURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("nginx for service %q: lb.nginx.verify_url %q is not an absolute URL, so bgd cannot reach nginx's preview route", b.service, b.cfg.VerifyURL)
	}
	if len(path) == 0 || path[0] != '/' {
		return "", fmt.Errorf("nginx for service %q: preview path %q does not start with /", b.service, path)
	}
	if out, err := b.Render(lb.SampleRoute(b.service)); err == nil && !bytes.Contains(out, []byte("$http_x_bgd_preview")) {
		return "", &lb.UnsupportedError{Driver: "nginx", Feature: lb.FeaturePreview, Service: b.service,
			Detail: fmt.Sprintf("%s never reads $http_x_bgd_preview, so a preview request would reach the active slot: add the preview route (docs/nginx.md, \"Preview and smoke checks\") or leave health.smoke out", b.tmpl.Name())}
	}
	return u.Scheme + "://" + u.Host + path, nil
}

// PreparePreview makes sure nginx serves the file bgd renders for r, the
// routing in force: a repeated flip, which changes nothing when nginx
// already serves that file, and rewrites a file rendered before the
// template had a preview route.
func (b *Balancer) PreparePreview(ctx context.Context, r lb.Route) error {
	return b.Flip(ctx, r)
}
