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
// A user template must make the responses of verify_url carry the generation
// header (add_header {{.GenerationHeader}} {{.Generation}} always;) or no
// flip can ever be confirmed, and should carry the slot header, which Active
// reads. The rendered file must contain the active slot's address
// ({{.Active.Addr}}): that is how bgd makes sure it never writes an empty
// upstream.
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
package nginx
