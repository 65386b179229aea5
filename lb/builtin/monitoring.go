package builtin

import (
	"html/template"
	"net/http"
)

var monitoringPage = template.Must(template.New("monitoring").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>bgd: {{.Service}}</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em 1em;text-align:left}
.active{font-weight:bold}.ok{color:#080}.bad{color:#b00}</style></head>
<body><h1>bgd: {{.Service}}</h1>
<p>Active slot: <b>{{.State.ActiveVersion}}</b> (generation {{.State.Generation}})</p>
{{with .State.Canary}}<p>Canary: <b>{{.Color}}</b> gets {{.Weight}}% of new requests{{if .Sticky}} (sticky: a cookie keeps each client on its side){{end}}</p>
{{end}}<table><tr><th>slot</th><th>port</th><th>pid</th><th>release</th><th>healthy (last check)</th></tr>
<tr{{if eq .State.ActiveVersion "blue"}} class="active"{{end}}><td>blue</td><td>{{.State.BluePort}}</td><td>{{.State.BluePID}}</td><td>{{.State.BlueRelease}}</td>
<td class="{{if .State.BlueHealthy}}ok">yes{{else}}bad">no{{end}}</td></tr>
<tr{{if eq .State.ActiveVersion "green"}} class="active"{{end}}><td>green</td><td>{{.State.GreenPort}}</td><td>{{.State.GreenPID}}</td><td>{{.State.GreenRelease}}</td>
<td class="{{if .State.GreenHealthy}}ok">yes{{else}}bad">no{{end}}</td></tr></table>
<h2>Recent history</h2>
<table><tr><th>time</th><th>action</th><th>from</th><th>to</th><th>status</th><th>reason</th></tr>
{{range .History}}<tr><td>{{.Timestamp.Format "2006-01-02 15:04:05Z07:00"}}</td><td>{{.Action}}</td><td>{{.From}}</td><td>{{.To}}</td><td>{{.Status}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>
<p><a href="/metrics">metrics</a></p></body></html>
`))

func (p *Proxy) serveMonitoring(w http.ResponseWriter) {
	p.mu.Lock()
	st := p.snap.Clone()
	p.mu.Unlock()
	hist := st.History
	if len(hist) > 10 {
		hist = hist[len(hist)-10:]
	}
	// newest first
	rev := make([]any, 0, len(hist))
	for i := len(hist) - 1; i >= 0; i-- {
		rev = append(rev, hist[i])
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	monitoringPage.Execute(w, map[string]any{"Service": p.Service, "State": st, "History": rev})
}
