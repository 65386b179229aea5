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

// NginxRuntime is the template of the nginx driver's runtime mode
// (lb.nginx.mode: runtime): rendered once, with both slots' addresses; a
// Lua balancer (ngx_http_lua_module) picks each request's slot from a
// shared dict that bgd sets through a loopback-only location, so a flip
// needs no reload. The variables it receives are documented in lb/nginx.
//
//go:embed nginx/runtime.conf.tmpl
var NginxRuntime string
