package main

// appDescription is the DESCRIPTION of `bgd --help`.
const appDescription = `Run as root on the load-balancer host. Each service has two slots, blue and
green; deploy starts the idle one, checks its health and flips traffic to it.

Examples:
   bgd start blue                  start the first slot; it gets traffic
   bgd deploy --release v2         deploy v2 to the idle slot, then flip
   bgd rollback                    flip back to the previous slot
   bgd status --json               machine-readable state
   bgd -s web health-check         one service of several`

// globalsNote follows a command's options in its help.
const globalsNote = `
GLOBAL OPTIONS (--config, --service, --json, --verbose... see bgd --help) go
before or after the command: bgd status --json
`

// helpFooter ends every help text, the app's and each command's: the exit
// codes and the environment, the same for every command.
const helpFooter = `
EXIT CODES:
   0  done
   1  the operation failed (unhealthy, deploy failed, rollback impossible)
   2  bad usage or bad configuration
   3  another bgd operation holds the lock (see --lock-timeout)

ENVIRONMENT:
   BG_CONFIG      config file when --config is not given
   BG_STATE_FILE  state file of a single service (as --state-file)
   BLUE_PORT      port of the blue slot of a single service (overrides the config)
   GREEN_PORT     port of the green slot of a single service (overrides the config)
   BG_PROXY_PORT  listen port of the builtin proxy (overrides the config)
   NO_COLOR       no colour or emoji, even on a terminal
`
