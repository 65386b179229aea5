package dashboard

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"charts": charts,
	"pct":    func(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) },
	"rate":   func(f float64) string { return fmt.Sprintf("%.1f/s", f) },
	"ms": func(d time.Duration) string {
		if d == 0 {
			return "–"
		}
		return d.String()
	},
	"clock": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"since": func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() + " ago" },
	"label": markerLabel,
}

const style = `body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1em 0 .3em}
table{border-collapse:collapse}td,th{padding:.15em .8em;text-align:left;border-bottom:1px solid #eee}
.blue{color:#1f6fd1}.green{color:#1e9e4a}.ok{color:#080}.bad{color:#b00}.active td{font-weight:bold}
.note{color:#666;font-size:.9em}.err{color:#b00}#slots td,#slots th,#history td:nth-child(-n+5){white-space:nowrap}
svg.chart{max-width:980px;display:block;margin:.3em 0 .6em;font-size:11px}
svg .plot{fill:#fcfcfc;stroke:#ccc}svg .grid{stroke:#e4e4e4}
svg .ylab{text-anchor:end;fill:#666}svg .xlab{fill:#666}svg .ctitle{font-weight:bold;fill:#333}
svg .series{fill:none;stroke-width:1.6}svg .marker line{stroke:#555;stroke-dasharray:2,2}
svg .marker text{fill:#333}svg .marker.auto_rolled_back line,svg .marker.failed line{stroke:#c00}
svg .marker.auto_rolled_back text,svg .marker.failed text{fill:#c00}svg .legend text{fill:#333}`

// mainTmpl is the part of a service's page that live updates replace.
const mainTmpl = `{{define "main"}}{{$v := .}}
<p>Active slot: <b>{{.Active}}</b>{{with .Canary}} · Canary: <b>{{.Color}}</b> gets {{.Weight}}% of new requests{{if .Sticky}} (sticky: a cookie keeps each client on its side){{end}}{{end}}
{{- if .Maintenance}} · <b class="bad">maintenance</b>: every request is answered 503{{end}}
{{- with .Paused}} · <b class="bad">paused</b> until {{clock .Until}}{{end}}
{{- if .Shadow}} · shadow traffic to the standby{{end}}
{{- with .InProgress}} · operation in progress: {{.Command}} (pid {{.PID}}) since {{clock .Started}}{{end}}</p>
<table id="slots"><tr><th>slot</th><th>weight</th><th>health (recorded)</th><th>release</th><th>port</th><th>pid</th><th>requests</th><th>errors</th><th>latency</th></tr>
{{range .Slots}}<tr class="slot {{.Color}}{{if .Active}} active{{end}}" data-slot="{{.Color}}" data-weight="{{.Weight}}" data-healthy="{{.Healthy}}">
<td class="{{.Color}}">{{.Color}}{{if .Active}} (active){{end}}</td><td>{{.Weight}}%</td>
<td class="{{if .Healthy}}ok">healthy{{else}}bad">{{if .PID}}unhealthy{{else}}stopped{{end}}{{end}}</td>
<td>{{.Release}}</td><td>{{.Port}}</td><td>{{if .PID}}{{.PID}}{{end}}</td>
<td>{{rate .Last.Rate}}</td><td>{{pct .Last.ErrorShare}} ({{.Last.Errors}} of {{.Last.Requests}})</td>
<td>{{if .Last.P99}}p50 {{ms .Last.P50}}, p99 {{if .Last.Beyond}}&gt; {{end}}{{ms .Last.P99}}{{else if .Last.Mean}}mean {{ms .Last.Mean}}{{else}}–{{end}}</td></tr>
{{end}}</table>
<p class="note">Health as the state records it{{with .LastCheck}} (last check {{clock .}}){{end}}; rates and latencies over the last {{.Interval}}, as the {{.Driver}} load balancer counts them; {{len .Points}} samples, one every {{.Interval}}, at most 15 minutes kept.</p>
{{range .Errors}}<p class="err">Not sampled: {{.}}</p>{{end}}
{{range charts .}}{{.}}
{{end}}
<h2>Recent history</h2>
<table id="history"><tr><th>time</th><th>action</th><th>release</th><th>from → to</th><th>status</th><th>reason</th></tr>
{{range .History}}<tr><td>{{clock .Timestamp}}</td><td>{{.Action}}{{if .Weight}} {{.Weight}}%{{end}}</td><td>{{.Release}}</td><td>{{.From}} → {{.To}}</td><td class="{{if eq .Status "failed" "auto_rolled_back"}}bad{{else}}ok{{end}}">{{.Status}}</td><td>{{.Reason}}</td></tr>
{{else}}<tr><td colspan="6">nothing yet</td></tr>{{end}}</table>
{{end}}`

const pageTmpl = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<noscript><meta http-equiv="refresh" content="{{.Refresh}}"></noscript>
<title>bgd: {{.Title}}</title><style>` + style + `</style></head>
<body><h1>bgd: {{.Title}}{{if .Index}} <a class="note" href="{{.Index}}">all services</a>{{end}}</h1>
<p class="note" id="live">live: updated every {{.Interval}}</p>
<div id="main">{{if .View}}{{template "main" .View}}{{else}}{{template "index" .Views}}{{end}}</div>
<script>(function(){var every={{.IntervalMS}};function tick(){var u=new URL(location.href);u.searchParams.set("part","main");
fetch(u,{cache:"no-store"}).then(function(r){if(!r.ok)throw new Error(r.status);return r.text()}).then(function(t){
document.getElementById("main").innerHTML=t;document.getElementById("live").textContent="live: updated "+new Date().toLocaleTimeString()})
.catch(function(e){document.getElementById("live").textContent="not updating: "+e.message}).finally(function(){setTimeout(tick,every)})}
setTimeout(tick,every)})();</script>
</body></html>
{{define "index"}}<table id="services"><tr><th>service</th><th>driver</th><th>active</th><th>canary</th><th>blue</th><th>green</th></tr>
{{range .}}<tr><td><a href="?service={{.Service}}">{{.Service}}</a></td><td>{{.Driver}}</td><td class="{{.Active}}">{{.Active}}</td>
<td>{{with .Canary}}{{.Color}} {{.Weight}}%{{end}}</td>
{{range .Slots}}<td>{{if .Healthy}}healthy{{else}}not healthy{{end}}, {{rate .Last.Rate}}, {{pct .Last.ErrorShare}} errors</td>{{end}}</tr>
{{end}}</table>{{end}}`

var page = template.Must(template.Must(template.New("page").Funcs(funcs).Parse(pageTmpl)).Parse(mainTmpl))

// Handler serves s's dashboard at any path (the builtin proxy mounts it on
// /monitoring). Query: service=NAME picks a service (the only one by
// default; with several, no service is the index); format=json returns
// the View (the index: every View); part=main returns the fragment the
// page's script polls.
func Handler(s *Sampler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		name := q.Get("service")
		services := s.Services()
		if name == "" && len(services) == 1 {
			name = services[0]
		}
		data := struct {
			Title, Index, Interval string
			IntervalMS, Refresh    int64
			View                   *View
			Views                  []View
		}{Title: "all services", Interval: s.Interval().String(), IntervalMS: s.Interval().Milliseconds(),
			Refresh: max(1, int64(s.Interval().Seconds()))}
		if name != "" {
			v, ok := s.View(name)
			if !ok {
				http.Error(w, fmt.Sprintf("no service %q here; the dashboard shows %s", name, strings.Join(services, ", ")), http.StatusNotFound)
				return
			}
			data.View, data.Title = &v, v.Service
			if len(services) > 1 {
				data.Index = r.URL.Path
			}
		} else {
			for _, n := range services {
				v, _ := s.View(n)
				data.Views = append(data.Views, v)
			}
		}
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case q.Get("format") == "json":
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			if data.View != nil {
				enc.Encode(data.View)
				return
			}
			enc.Encode(map[string]any{"services": data.Views})
		case q.Get("part") == "main":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			if data.View != nil {
				page.ExecuteTemplate(w, "main", data.View)
				return
			}
			page.ExecuteTemplate(w, "index", data.Views)
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			page.Execute(w, data)
		}
	})
}
