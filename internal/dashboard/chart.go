package dashboard

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/bgd-dev/bgd/config"
	"github.com/bgd-dev/bgd/state"
)

// The charts' geometry, in SVG user units.
const (
	chartW, chartH                   = 960, 190
	padL, padR, padT, padB           = 58, 14, 42, 22
	plotW, plotH                     = chartW - padL - padR, chartH - padT - padB
	blueStroke, greenStroke, mkColor = "#1f6fd1", "#1e9e4a", "#555"
)

func stroke(c config.Color) string {
	if c == config.Green {
		return greenStroke
	}
	return blueStroke
}

// line is one series of a chart: a value per point, NaN for a gap.
type line struct {
	slot   config.Color
	name   string // data-series: rate, errors, p50, p99, mean
	dashed bool
	values []float64
}

// dash is the SVG attribute of a dashed line's stroke.
func (l line) dash() string {
	if l.dashed {
		return ` stroke-dasharray="5,4"`
	}
	return ""
}

// chart renders one time-series chart of lines over v's time range, with
// v's markers (labelled when labels is set).
func chart(v *View, id, title, unit string, lines []line, labels bool) template.HTML {
	from, to := v.timeRange()
	top := 0.0
	for _, l := range lines {
		for _, y := range l.values {
			if !math.IsNaN(y) {
				top = max(top, y)
			}
		}
	}
	p := plot{from: from, to: to, ymax: niceCeil(top * 1.1)}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="%s" class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`,
		id, chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(&b, `<title>%s</title>`, html.EscapeString(title))
	fmt.Fprintf(&b, `<text class="ctitle" x="%d" y="14">%s</text>`, padL, html.EscapeString(title))
	p.axes(&b, unit)
	p.markers(&b, v.Markers, labels)
	p.series(&b, v.Points, lines)
	legend(&b, lines)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// plot places a chart's times and values in its plot area.
type plot struct {
	from, to time.Time
	ymax     float64
}

func (p plot) x(t time.Time) float64 {
	return padL + plotW*t.Sub(p.from).Seconds()/p.to.Sub(p.from).Seconds()
}

func (p plot) y(v float64) float64 { return padT + plotH*(1-v/p.ymax) }

// axes draws the plot's frame, its grid and the labels of both axes.
func (p plot) axes(b *strings.Builder, unit string) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" class="plot"/>`, padL, padT, plotW, plotH)
	for _, f := range []float64{0, 0.5, 1} {
		y := p.y(p.ymax * f)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text class="ylab" x="%d" y="%.1f">%s</text>`,
			padL, padL+plotW, y, y, padL-4, y+4, html.EscapeString(formatValue(p.ymax*f, unit)))
	}
	for i := 0; i <= 4; i++ {
		t := p.from.Add(time.Duration(float64(p.to.Sub(p.from)) * float64(i) / 4))
		anchor := map[int]string{0: "start", 4: "end"}[i]
		if anchor == "" {
			anchor = "middle"
		}
		fmt.Fprintf(b, `<text class="xlab" x="%.1f" y="%d" text-anchor="%s">%s</text>`, p.x(t), chartH-6, anchor, t.UTC().Format("15:04:05"))
	}
}

// markers draws the events under the lines. Each label takes the first of
// two rows where it does not overlap the one before; a marker with no room
// keeps its line and its tooltip.
func (p plot) markers(b *strings.Builder, events []state.Event, labels bool) {
	rowEnd := [2]float64{math.Inf(-1), math.Inf(-1)}
	for _, e := range events {
		x := p.x(e.Timestamp)
		cls := "marker"
		if e.Status != state.StatusSuccess {
			cls += " " + e.Status
		}
		fmt.Fprintf(b, `<g class="%s" data-action="%s" data-status="%s" data-time="%s"><title>%s</title><line x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>`,
			cls, html.EscapeString(e.Action), html.EscapeString(e.Status), e.Timestamp.UTC().Format(time.RFC3339Nano),
			html.EscapeString(eventTitle(e)), x, x, padT-22, padT+plotH)
		if labels {
			label := markerLabel(e)
			width := 6.0 * float64(len(label))
			start, anchor, ax := x+2, "start", x+2
			if x > padL+plotW*0.8 {
				start, anchor, ax = x-2-width, "end", x-2
			}
			for row := range rowEnd {
				if start > rowEnd[row]+4 {
					rowEnd[row] = start + width
					fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="%s">%s</text>`, ax, padT-14+row*9, anchor, html.EscapeString(label))
					break
				}
			}
		}
		b.WriteString(`</g>`)
	}
}

// series draws each line as one path, lifting the pen over its gaps.
func (p plot) series(b *strings.Builder, points []Point, lines []line) {
	for _, l := range lines {
		var d strings.Builder
		pen := false
		maxV, lastV := 0.0, math.NaN()
		for i, y := range l.values {
			if math.IsNaN(y) {
				pen = false
				continue
			}
			cmd := 'L'
			if !pen {
				cmd = 'M'
			}
			fmt.Fprintf(&d, "%c%.1f,%.1f", cmd, p.x(points[i].At), p.y(y))
			pen = true
			maxV, lastV = max(maxV, y), y
		}
		fmt.Fprintf(b, `<path class="series %s" data-slot="%s" data-series="%s" data-max="%s" data-last="%s" stroke="%s"%s d="%s"/>`,
			l.slot, l.slot, l.name, num(maxV), num(lastV), stroke(l.slot), l.dash(), d.String())
	}
}

// legend names the lines at the chart's top right, the last rightmost.
func legend(b *strings.Builder, lines []line) {
	x := padL + plotW - 10
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		label := fmt.Sprintf("%s %s", l.slot, l.name)
		x -= 6*len(label) + 34
		fmt.Fprintf(b, `<g class="legend"><line x1="%d" x2="%d" y1="10" y2="10" stroke="%s"%s/><text x="%d" y="14">%s</text></g>`,
			x, x+20, stroke(l.slot), l.dash(), x+24, html.EscapeString(label))
	}
}

// num is a data attribute's number ("" for NaN).
func num(f float64) string {
	if math.IsNaN(f) {
		return ""
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

// niceCeil is the smallest of 1, 2, 5 times a power of ten at least f (1
// for nothing to show).
func niceCeil(f float64) float64 {
	if f <= 0 || math.IsNaN(f) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(f)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= f {
			return m * p
		}
	}
	return 10 * p
}

func formatValue(f float64, unit string) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if f != math.Trunc(f) {
		s = strconv.FormatFloat(f, 'g', 3, 64)
	}
	return s + unit
}

// markerLabel is a marker's short label: the action, and the release.
func markerLabel(e state.Event) string {
	s := e.Action
	switch {
	case e.Status == state.StatusAutoRolledBack:
		s += " (auto)"
	case e.Status == state.StatusFailed:
		s += " (failed)"
	}
	if e.Action == "canary" && e.Weight > 0 {
		s += fmt.Sprintf(" %d%%", e.Weight)
	}
	if e.Release != "" {
		s += " " + e.Release
	}
	return s
}

func eventTitle(e state.Event) string {
	s := fmt.Sprintf("%s %s: %s", e.Timestamp.UTC().Format("15:04:05"), e.Action, e.Status)
	if e.From != "" || e.To != "" {
		s += fmt.Sprintf(" (%s → %s)", e.From, e.To)
	}
	if e.Release != "" {
		s += ", release " + e.Release
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// charts are the service's three charts: requests per second, errors as a
// share of each slot's requests, latency (p50 and p99, or the driver's
// mean).
func charts(v *View) []template.HTML {
	series := func(c config.Color, f func(*SlotPoint) float64) []float64 {
		out := make([]float64, len(v.Points))
		for i := range v.Points {
			sp := v.Points[i].Slot(c)
			if !sp.Observed {
				out[i] = math.NaN()
				continue
			}
			out[i] = f(sp)
		}
		return out
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	var rate, errs, lat []line
	mean := false
	for i := range v.Points {
		for _, c := range config.Colors {
			if sp := v.Points[i].Slot(c); sp.Mean > 0 && sp.P99 == 0 {
				mean = true
			}
		}
	}
	for _, c := range config.Colors {
		rate = append(rate, line{slot: c, name: "rate", values: series(c, func(sp *SlotPoint) float64 { return sp.Rate })})
		errs = append(errs, line{slot: c, name: "errors", values: series(c, func(sp *SlotPoint) float64 { return 100 * sp.ErrorShare })})
		if mean {
			lat = append(lat, line{slot: c, name: "mean", values: series(c, func(sp *SlotPoint) float64 {
				if sp.Requests == 0 {
					return math.NaN()
				}
				return ms(sp.Mean)
			})})
			continue
		}
		noReq := func(f func(*SlotPoint) time.Duration) func(*SlotPoint) float64 {
			return func(sp *SlotPoint) float64 {
				if sp.Requests == 0 {
					return math.NaN()
				}
				return ms(f(sp))
			}
		}
		lat = append(lat,
			line{slot: c, name: "p50", dashed: true, values: series(c, noReq(func(sp *SlotPoint) time.Duration { return sp.P50 }))},
			line{slot: c, name: "p99", values: series(c, noReq(func(sp *SlotPoint) time.Duration { return sp.P99 }))})
	}
	latTitle := "Latency, ms (bucket upper bounds)"
	if mean {
		latTitle = "Latency, ms (mean: no histogram)"
	}
	return []template.HTML{
		chart(v, "chart-rate", "Requests per second", "", rate, true),
		chart(v, "chart-errors", "Errors, % of the slot's requests (5xx and no answer)", "%", errs, false),
		chart(v, "chart-latency", latTitle, "", lat, false),
	}
}
