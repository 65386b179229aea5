package templates

import _ "embed"

// Nginx is the default template of the nginx driver (lb/nginx): an upstream
// naming the active slot and a server on lb.nginx.listen that proxies to it
// and answers with the X-Bgd-Generation and X-Bgd-Slot headers the driver
// verifies a flip by. During a canary split the upstream holds both slots
// with their weights, X-Bgd-Slot names the colour that served and
// X-Bgd-Active the stable one; a sticky split adds an upstream per colour
// and routes by the cookie bgd_<service>. The variables it receives are
// documented in lb/nginx.
//
//go:embed nginx/default.conf.tmpl
var Nginx string
