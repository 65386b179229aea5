package main

import (
	"fmt"
	"time"

	"github.com/bgd-dev/bgd/orchestrator"
	"github.com/urfave/cli/v2"
)

// holdLines are the status lines of a pause or maintenance in force.
func (p *printer) holdLines(s *orchestrator.Status) string {
	out := ""
	if ps := s.Paused; ps != nil {
		if s.PauseExpired {
			out += fmt.Sprintf("%sPause timed out at %s: the load balancer released its requests (`bgd resume` clears it)\n",
				p.icon("⏸️"), ps.Until.Format(time.RFC3339))
		} else {
			out += fmt.Sprintf("%sPaused since %s: new requests are held until `bgd resume`, at most until %s\n",
				p.icon("⏸️"), ps.Since.Format(time.RFC3339), ps.Until.Format(time.RFC3339))
		}
	}
	if s.Maintenance {
		page := "the load balancer's own text"
		if s.MaintenancePage != "" {
			page = s.MaintenancePage
		}
		out += fmt.Sprintf("%sMaintenance: every request is answered 503 with %s (`bgd maintenance off`)\n", p.icon("🚧"), page)
	}
	return out
}

// pauseCommands are bgd pause, resume and maintenance.
func pauseCommands(e *env) []*cli.Command {
	var (
		timeout time.Duration
		page    string
	)
	return []*cli.Command{
		{
			Name:  "pause",
			Usage: "hold the service's new requests in the load balancer (they wait, not fail) until `bgd resume` or the timeout",
			Description: "The load balancer releases the held requests by itself once --timeout (default: pause_timeout, 30s) has passed.\n" +
				"A switch or deploy while paused is allowed: the held requests go to the new routing on resume.\n" +
				"builtin and haproxy drivers only; nginx refuses it (exit 2).\n\n" +
				"Example:\n   bgd pause --timeout 60s && ./migrate && bgd resume",
			Flags:  []cli.Flag{&cli.DurationFlag{Name: "timeout", Destination: &timeout, Usage: "release the held requests by themselves after this long (default: pause_timeout)"}},
			Before: noArgs,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Pause(c.Context, timeout)
			}),
		},
		{
			Name:        "resume",
			Usage:       "end a pause: the load balancer releases the held requests to the routing in force",
			Description: "Example: bgd resume",
			Before:      noArgs,
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Resume(c.Context)
			}),
		},
		{
			Name:      "maintenance",
			Usage:     "on: answer every request 503 with Retry-After and a page instead of routing it; off: route again",
			ArgsUsage: "<on|off>",
			Description: "The page is --page, else maintenance_page, else the load balancer's own short text.\n\n" +
				"Examples:\n   bgd maintenance on --page /srv/www/maintenance.html\n   bgd maintenance off",
			Flags: []cli.Flag{&cli.StringFlag{Name: "page", Destination: &page, Usage: "HTML file answered during maintenance (default: maintenance_page)"}},
			Before: func(c *cli.Context) error {
				if a := c.Args(); a.Len() != 1 || a.First() != "on" && a.First() != "off" {
					return usagef("maintenance needs one argument: on or off")
				}
				return nil
			},
			Action: e.mutate(func(c *cli.Context, o *orchestrator.Orchestrator) (*orchestrator.Result, error) {
				return o.Maintenance(c.Context, c.Args().First() == "on", page)
			}),
		},
	}
}
