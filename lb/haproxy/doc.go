// Package haproxy is bgd's HAProxy driver. HAProxy's frontend picks the
// service's backend from one map entry,
//
//	use_backend %[str(<service>),map(<map_file>)]
//
// with one backend per colour (lb.haproxy.backends, default <service>_blue
// and <service>_green), and a flip changes that entry through the runtime
// API (package admin): no reload, no dropped request. Measured on HAProxy
// 2.6: flipping server states ("maint old; ready new") dropped requests under
// load, one `set map` did not.
//
// A Flip, step by step (each step leaves the routing as it was on failure):
//
//  1. `show backend`: the target backend must exist, because a map value
//     naming a missing backend silently falls to default_backend (ErrNoBackend).
//  2. `get map`: the map must be loaded (ErrMapNotLoaded, naming the maps
//     HAProxy did load); an entry already naming the target only gets the
//     map file checked.
//  3. `show stat <backend> 4 -1` until a server is UP by HAProxy's own
//     checks, which lag behind bgd's by rise × inter; bounded by
//     Options.UpTimeout (ErrNoServerUp, listing each server's state).
//  4. `set map <map_file> <service> <backend>`, or `add map` when the
//     service has no entry. Each command is sent alone: a ';'-joined line is
//     not atomic in HAProxy.
//  5. `get map` again: the entry must name the target, else the previous
//     one is restored (lb.ErrNotConfirmed). HAProxy can answer a set with
//     nothing and change nothing (a map shared with a typed converter such
//     as map_str_int): only the read-back tells.
//  6. Rewrite map_file atomically (temp file, fsync, rename), changing only
//     the service's line, so a reload or restart keeps the colour; on
//     failure the runtime entry is restored (ErrMapFile).
//  7. Point the preview entry "<service>@preview" at the standby's backend
//     (preview.go); the flip stands even if that step fails (logged).
//
// An unreachable socket (missing, permission denied, refused) is
// lb.ErrUnreachable with the socket's path. Active reads the entry back
// with `get map`, so `bgd status` shows what HAProxy really does.
//
// # Canaries (weighted splits)
//
// A route that Splits is routed to the split backend
// (lb.haproxy.split_backend, default <service>_split): both colours'
// servers, named blue and green, `balance roundrobin`, which the snippet
// prints. No reload:
//
//  1. `show backend` and `show stat`: the split backend must exist with
//     servers blue and green at the route's slots (compared for IPv4
//     addresses; ErrNoBackend, saying `bgd render` prints it), and its
//     cookie must match the route (ErrSticky, below).
//  2. `get map` and `get weight` of both servers: what to put back.
//  3. `set weight <split>/<colour> <percent>` for both: HAProxy's weights
//     are relative, so the percentages are used as they are (0-256).
//  4. `show stat <split> 4 -1` until both servers are UP by HAProxy's own
//     checks (ErrNoServerUp): a split sends new requests to both.
//  5. `set map` (or `add map`) to the split backend, unless it already
//     names it (a new weight during a canary changes only the weights).
//  6. `get map` and `get weight` of both servers: the entry must name the
//     split backend and the weights be the percentages, else the previous
//     entry and weights are put back (lb.ErrNotConfirmed).
//  7. The map file's line becomes "<service> <split>".
//
// Promote and abort are plain flips: the entry names a colour's backend
// again. HAProxy's roundrobin is exact: at 10% the canary gets 1 request in
// 10, to the request.
//
// Sticky: HAProxy reads a `cookie` directive only from its configuration,
// so the split backend's stickiness is configuration, and each split
// checks it against the route through `show stat` (the backend's cookie
// column names the cookie, each server's its value). A sticky route needs
// `cookie <lb.StickyCookie(service)> insert indirect nocache httponly` and
// `cookie blue` / `cookie green` on the servers (Options.Sticky renders
// them); a route that is not sticky needs no cookie at all, since HAProxy
// would keep clients on one side. Either mismatch is ErrSticky, naming what
// to change. HAProxy writes the cookie as "<name>=<colour>; path=/;
// HttpOnly" (attribute names are case-insensitive), and a client whose
// cookie names a colour goes to that server whatever its weight; when the
// entry names a colour's backend, which has no cookie, the cookie is
// ignored and none is set.
//
// Active, while the entry names the split backend, is the colour whose
// server there has the larger weight: the stable colour gets 100 - w and
// the canary w, so that is the stable colour for any w < 50. At an even
// split HAProxy holds nothing that tells them apart and Active returns
// ErrEvenSplit (bgd reconcile then keeps the state file's colour).
//
// A reload or a restart keeps the entry (the map file names the split
// backend) but gives the servers the configuration's weights again: the
// snippet renders 100 for the active colour and 0 for the other (a split
// route's own weights when rendered during one), so a canary reloaded that
// way sends every new request to the colour that was active when the
// snippet was rendered, until bgd sets the weights again. HAProxy's
// `server-state-file` with `load-server-state-from-file`, and `show servers
// state` saved to that file before each reload, keeps the weights.
//
// # The snippet
//
// Render (`bgd render`) prints the configuration a user includes: the
// admin `stats socket` line, a frontend with the map rule and `option
// idle-close-on-response` (a reload then closes idle keep-alive
// connections after their response instead of resetting them), and one
// backend per colour with `option httpchk` on the health path, and the
// split backend of a canary. The default
// is templates.HAProxy; Options.Template replaces it and gets the same
// variables (type Data):
//
//	.Service       the service name, also the map key
//	.MapFile       lb.haproxy.map_file
//	.Socket        the admin socket as a `stats socket` wants it: a path, or
//	               ipv4@host:port for lb.haproxy.socket tcp://host:port
//	.SocketIsUnix  true for a path (a file mode applies)
//	.Bind          the frontend's bind address (Options.Bind, default ":80")
//	.HealthPath    the slots' health path, for `option httpchk GET`
//	.Check         the server "check" parameters (Options.Check)
//	.Backends      blue then green: .Color .Name .Addr .Active
//	.Active        the backend the route makes active
//	.Split         the split backend: .Name .Cookie .Sticky, and .Servers
//	               (blue then green: .Color .Addr .Weight)
//	.Generation    the route's generation number
//
// # Protecting the admin socket
//
// Whoever can write to the socket can reroute every service, so: a unix
// socket with `mode 600` (bgd runs as root) or `mode 660 user haproxy group
// <bgd's group>` (bgd runs as a member of that group), in a directory only
// they can enter; `level admin` is what HAProxy's documentation gives for
// changing state (HAProxy 2.6 accepts map commands at lower levels too, but
// later versions may not). A TCP socket has no file mode: bind it to
// loopback (`stats socket ipv4@127.0.0.1:9999 level admin`) or a private
// network and firewall it. bgd also needs to write map_file and create a
// temporary file beside it (the atomic rename), so the file's directory
// must be writable by bgd's user.
//
// With lb.haproxy.socket tcp://host:port for a remote HAProxy, map_file is
// still a path on bgd's host: HAProxy's host must see the same file (a
// shared mount), or a reload there loses the flip. bgd refuses to flip
// when map_file does not exist on its own host.
//
// # Maintenance, and why there is no pause
//
// The snippet's frontend answers every request 503 (Retry-After, and the
// page of Options.MaintenancePage with `file`, else a short text) while
// the map's entry "<service>@maintenance" is "on"; bgd sets that entry at
// runtime and in map_file, as it does the colour's entry, so a reload
// keeps it. HAProxy reads the page when it loads its configuration: a route
// with any other page is refused (lb.ErrUnsupported), since HAProxy would
// answer the page it loaded, not the one asked for.
//
// A pause is refused: nothing in the runtime API holds requests and
// releases them on demand. `set maxconn server <b>/<s> 0` means no limit;
// `disable server` and `set weight <b>/<s> 0` make HAProxy answer 503 at
// once; `set maxconn frontend <f> 0` leaves new connections waiting, but
// raising it with connections waiting crashed HAProxy 2.6.12 in
// dequeue_proxy_listeners when we tried it.
package haproxy
