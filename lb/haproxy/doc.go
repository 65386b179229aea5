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
//
// An unreachable socket (missing, permission denied, refused) is
// lb.ErrUnreachable with the socket's path. Active reads the entry back
// with `get map`, so `bgd status` shows what HAProxy really does.
//
// # The snippet
//
// Render (`bgd render`) prints the configuration a user includes: the
// admin `stats socket` line, a frontend with the map rule and `option
// idle-close-on-response` (a reload then closes idle keep-alive
// connections after their response instead of resetting them), and one
// backend per colour with `option httpchk` on the health path. The default
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
package haproxy
