// Package nginx is bgd's nginx driver. bgd owns one file (lb.nginx.file),
// which nginx includes in its http block; a flip renders that file from a
// template, writes it atomically, runs the test command (nginx -t), runs the
// reload command, and then polls verify_url until nginx answers with the new
// generation in the X-Bgd-Generation response header.
//
// A reload that exits 0 proves nothing on nginx: when the new configuration
// cannot be applied (a listen port already in use, say) the master logs it
// and keeps running the old one. So a flip only counts once nginx itself
// answers with the new generation; if it never does within
// Options.VerifyTimeout, the previous file is restored, nginx is reloaded
// again and Flip fails with lb.ErrNotConfirmed. A file nginx -t rejects is
// never left behind: the previous file is restored byte for byte (or removed,
// if there was none) and nothing is reloaded.
//
// # Template variables
//
// The default template is templates.Nginx. A user template (lb.nginx.template,
// a path) is a Go text/template receiving a Data value:
//
//	{{.Service}}           the service name, e.g. app (letters, digits, '_', '.', '-')
//	{{.Upstream}}          the upstream name to use, bgd_<service>
//	{{.Listen}}            lb.nginx.listen, e.g. 80 or 127.0.0.1:8080
//	{{.Generation}}        the flip's generation, a decimal number that grows with every flip
//	{{.Color}}             the active colour, blue or green (same as .Active.Color)
//	{{.Active.Color}}      the active slot: colour,
//	{{.Active.Host}}       host (127.0.0.1),
//	{{.Active.Port}}       port,
//	{{.Active.Addr}}       and host:port
//	{{.Standby.Color}}     the standby slot, same fields as .Active
//	{{.HealthPath}}        the slots' health path, e.g. /health
//	{{.GenerationHeader}}  X-Bgd-Generation
//	{{.SlotHeader}}        X-Bgd-Slot
//
// and, for weighted splits (a canary):
//
//	{{.Split}}             true when new requests are shared between the slots
//	{{.Active.Weight}}     the active slot's percentage during a split (0 otherwise)
//	{{.Standby.Weight}}    the canary's percentage during a split, 1-99
//	{{.Active.AddrRegexp}} Addr as a regular expression for a map on $upstream_addr
//	{{.Sticky}}            true when the split keeps each client on one colour
//	{{.StickyCookie}}      that cookie's name, bgd_<service> (lb.StickyCookie)
//	{{.Vars}}              a prefix for the service's nginx variables, bgd_<service>
//	{{.ActiveHeader}}      X-Bgd-Active
//	{{.WeightsHeader}}     X-Bgd-Weights
//
// and, for shadow traffic (copies of each request to the standby):
//
//	{{.Shadow}}            true while shadow traffic is on
//	{{.ShadowPath}}        the internal location of the copies, /_bgd_shadow
//	{{.ShadowBodyBuffer}}  client_body_buffer_size of the mirrored location, 64k
//	{{.ShadowTimeout}}     the copies' proxy timeouts, 2s
//
// and, for maintenance (bgd maintenance on):
//
//	{{.Maintenance}}       true when every request is answered 503 instead of routed
//	{{.MaintenancePage}}   the page's file (<lb.nginx.file>.maintenance.html, written by bgd), "" without a page
//	{{.MaintenanceText}}   the short text answered without a page, as an nginx quoted string's content
//	{{.RetryAfter}}        the Retry-After header's value, 60
//
// In maintenance the answers of verify_url must still carry the generation
// and slot headers (the default template adds them to the 503s), or the
// flip is not confirmed. nginx cannot hold requests, so a pause is refused.
//
// A user template must make the responses of verify_url carry the generation
// header (add_header {{.GenerationHeader}} {{.Generation}} always;) or no
// flip can ever be confirmed, and should carry the slot header, which Active
// reads. The rendered file must contain the active slot's address
// ({{.Active.Addr}}): that is how bgd makes sure it never writes an empty
// upstream.
//
// # Preview
//
// The default template routes a request with X-Bgd-Preview: 1 from a
// loopback address (a geo on $remote_addr) to an upstream holding only the
// standby slot, and names the standby in X-Bgd-Slot on its answers
// (preview.go); PreviewURL is verify_url's scheme, host and port. A user
// template without that route makes the smoke check fail, never pass.
//
// # Weighted splits and sticky clients
//
// A route that splits (lb.Route.Splits) is written as one upstream holding
// both slots with weight=<percent>: nginx's smooth weighted round-robin,
// whose state the upstream's zone shares between all the workers, so any
// 100 consecutive new requests of the service, whichever worker took them,
// include exactly the canary's weight of them. A map on $upstream_addr names
// the colour that served each answer (X-Bgd-Slot); X-Bgd-Active names the
// route's active, stable colour, which Active reads when the answer has it,
// and X-Bgd-Weights the weights. A flip to or from a split is confirmed by
// its generation alone, as any flip. Since nginx reports the address it
// connected to, a split's slot hosts must be IP addresses; a host name is
// refused (lb.ErrUnsupported).
//
// A sticky split adds one upstream per colour and routes by the cookie
// lb.StickyCookie(service): a cookie naming a colour sends the request to
// that colour's upstream (the other colour is its backup, for while that
// colour refuses connections); any other request goes to the split, and its
// answer carries Set-Cookie: <name>=<colour that served>; Path=/; HttpOnly.
// A route that does not split renders exactly as before: no cookie is read
// or set.
//
// A user template written before splits renders today's routes unchanged;
// asked for a split, its output must contain the canary's
// server <addr> weight=<percent> line (and, sticky, $cookie_<name>), or the
// route is refused with config.ErrInvalid saying what to add, rather than
// sending everything to the active slot while the canary looks healthy.
//
// # Keep-alive clients and reloads
//
// Every nginx reload makes the old workers close their idle keep-alive client
// connections. A client that sends a request on such a connection at that
// moment gets a reset or an EOF; nginx 1.22 has no setting that prevents it
// (keepalive_min_timeout, which does, appeared in later nginx releases). Clients
// that retry idempotent requests (Go's net/http does) never notice;
// non-idempotent requests on a reused connection can fail. Clients that open a
// new connection per request never fail during a flip.
//
// # Runtime mode
//
// With lb.nginx.mode runtime (runtime.go) the file comes from
// templates.NginxRuntime instead (a user template is refused): it is the
// same for every route with the same slot addresses, so it is written,
// tested and reloaded only when it differs (the first flip, new slot
// addresses). A flip writes the route (generation, active colour, both
// weights; key=value lines) to RouteFile, PUTs it to AdminPath, a location
// that answers loopback clients only, and checks that the answer names the
// generation and then that verify_url answers with it. nginx's Lua code
// keeps the route in a lua_shared_dict, which a reload keeps, and reads
// RouteFile when the dict is empty (after a restart); a Lua balancer picks
// each request's slot. nginx must load ngx_http_lua_module (and, with
// Debian's build, the NDK) with load_module; New refuses the mode when
// lb.nginx.lua_module is missing or, when the test command is nginx, when
// that nginx cannot load it.
package nginx
