package builtin

import (
	"net/http"
	"strconv"

	"github.com/bgd-dev/bgd/internal/fsx"
	"github.com/bgd-dev/bgd/lb"
	"github.com/bgd-dev/bgd/state"
)

// MaxMaintenancePage bounds the maintenance page the proxy answers.
const MaxMaintenancePage = 64 << 10

// PagePath is where the proxy of the state file statePath reads its
// maintenance page: bgd maintenance on copies the operator's page there.
// The proxy never opens the path the state file names (a state file is
// not trusted to choose what a root-run proxy reads and serves).
func PagePath(statePath string) string { return statePath + ".maintenance.html" }

// maintenance is the answer the proxy gives every request of the service
// while the state file says "maintenance": 503, Retry-After and the page.
type maintenance struct {
	path        string // the operator's page file (the state's), "" for lb.DefaultMaintenancePage
	body        []byte
	contentType string
}

// applyMaintenance follows the state's maintenance flag and page: the page
// file is read when maintenance begins or the page changes; a page that
// cannot be read is replaced by the default text (and logged), since
// answering 503 is what maintenance promises. Called under p.mu by reload.
func (p *Proxy) applyMaintenance(st *state.State) {
	cur := p.maint.Load()
	if !st.Maintenance {
		if cur != nil {
			p.maint.Store(nil)
			p.Logger.Info("proxy maintenance off: requests are routed again", "service", p.Service)
		}
		return
	}
	if cur != nil && cur.path == st.MaintenancePage {
		return
	}
	m := &maintenance{path: st.MaintenancePage, body: []byte(lb.DefaultMaintenancePage), contentType: "text/plain; charset=utf-8"}
	if m.path != "" {
		if b, err := fsx.ReadRegular(PagePath(p.StatePath), MaxMaintenancePage); err != nil {
			p.Logger.Error("proxy maintenance page unreadable: answering the default text", "service", p.Service, "page", m.path, "err", err)
		} else {
			m.body, m.contentType = b, "text/html; charset=utf-8"
		}
	}
	p.maint.Store(m)
	p.Logger.Info("proxy maintenance on: every request is answered 503", "service", p.Service, "page", m.path)
}

// serveMaintenance answers r with the maintenance page and reports true
// while maintenance is on; otherwise it is one atomic load.
func (p *Proxy) serveMaintenance(w http.ResponseWriter, r *http.Request) bool {
	m := p.maint.Load()
	if m == nil {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", m.contentType)
	h.Set("Content-Length", strconv.Itoa(len(m.body)))
	h.Set("Retry-After", lb.MaintenanceRetryAfter)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	if r.Method != http.MethodHead {
		w.Write(m.body)
	}
	return true
}
