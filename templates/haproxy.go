package templates

import _ "embed"

// HAProxy is the snippet `bgd render` prints for the HAProxy driver
// (lb/haproxy): the admin socket line, a frontend whose backend is chosen by
// one map entry, and one health-checked backend per colour. The variables
// it receives are documented in lb/haproxy.
//
//go:embed haproxy/snippet.cfg.tmpl
var HAProxy string
