package loadgen

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// series is one line of a chart.
type series struct {
	Name  string
	Color string
	X, Y  []float64
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

// svgLineChart renders series as an inline SVG line chart with axes, ticks
// and a legend. It needs no script and no network.
func svgLineChart(title, xLabel, yLabel string, ss []series, logX bool) template.HTML {
	const W, H, L, R, T, B = 640, 310, 64, 16, 44, 44
	var xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), 0.0, math.Inf(-1)
	n := 0
	for _, s := range ss {
		for i := range s.X {
			x := s.X[i]
			if logX {
				x = logPct(x)
			}
			xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
			ymax = math.Max(ymax, s.Y[i])
			n++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`, W, H, W, H, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>`, L, template.HTMLEscapeString(title))
	if n == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12">no data</text></svg>`, L, H/2)
		return template.HTML(b.String())
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	if ymax <= ymin {
		ymax = ymin + 1
	}
	ymax = niceCeil(ymax)
	px := func(x float64) float64 {
		if logX {
			x = logPct(x)
		}
		return L + (x-xmin)/(xmax-xmin)*(W-L-R)
	}
	py := func(y float64) float64 { return H - B - (y-ymin)/(ymax-ymin)*(H-T-B) }
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`, L, T, W-L-R, H-T-B)
	for i := 0; i <= 4; i++ {
		y := ymin + (ymax-ymin)*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>`,
			L, W-R, py(y), py(y), L-4, py(y)+3, fmtTick(y))
	}
	var xt []float64
	if logX {
		xt = []float64{0, 50, 90, 99, 99.9}
	} else if xmax-xmin <= 10 && xmin == math.Trunc(xmin) && xmax == math.Trunc(xmax) {
		for x := xmin; x <= xmax; x++ {
			xt = append(xt, x)
		}
	} else {
		step := niceCeil((xmax - xmin) / 6)
		for x := math.Ceil(xmin/step) * step; x <= xmax+step*1e-9; x += step {
			xt = append(xt, x)
		}
	}
	for _, x := range xt {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>`, px(x), H-B+14, fmtTick(x))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" text-anchor="middle">%s</text>`, L+(W-L-R)/2, H-8, template.HTMLEscapeString(xLabel))
	fmt.Fprintf(&b, `<text x="12" y="%d" font-size="11" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`, T+(H-T-B)/2, T+(H-T-B)/2, template.HTMLEscapeString(yLabel))
	for i, s := range ss {
		c := s.Color
		if c == "" {
			c = palette[i%len(palette)]
		}
		var pts []string
		for k := range s.X {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[k]), py(s.Y[k])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`, c, strings.Join(pts, " "))
		if len(s.X) <= 40 {
			for k := range s.X {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s: %s, %s</title></circle>`, px(s.X[k]), py(s.Y[k]), c,
					template.HTMLEscapeString(s.Name), fmtTick(s.X[k]), fmtTick(s.Y[k]))
			}
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`,
			L+i*150, T-16, c, L+14+i*150, T-7, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// logPct maps a percentile to a "nines" scale so tails get room.
func logPct(p float64) float64 {
	if p >= 100 {
		p = 99.99
	}
	return -math.Log10(1 - p/100)
}

func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func fmtTick(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return fmt.Sprintf("%.3g", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

type reportRow struct {
	Name string
	F    Figures
	Req  string
	Note string
}

type reportData struct {
	S       *Summary
	Rows    []reportRow
	Charts  []template.HTML
	Defs    [][2]string
	Errors  [][2]string
	Notes   []string
	Pct     []string
	SLOText string
}

var reportTmpl = template.Must(template.New("r").Funcs(template.FuncMap{
	"ms":  func(v float64) string { return fmt.Sprintf("%.1f", v*1000) },
	"f2":  func(v float64) string { return fmt.Sprintf("%.2f", v) },
	"ms3": func(v float64) string { return fmt.Sprintf("%.3f", v*1000) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>loadgen report</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1360px}
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:16px}
.note{background:#fff6d6;padding:6px 10px;border-left:4px solid #e0b000;margin:6px 0}code{background:#f3f3f3;padding:1px 3px}
</style></head><body>
<h1>loadgen report</h1>
<p>{{.S.LoadType}} load, {{.S.APIType}} API{{if .S.Streaming}} (streaming){{end}}, model <code>{{.S.Model}}</code> at <code>{{.S.BaseURL}}</code>, started {{.S.StartedAt.Format "2006-01-02 15:04:05 UTC"}}.{{if .SLOText}} SLO: {{.SLOText}}.{{end}}</p>
{{range .Notes}}<div class="note">{{.}}</div>{{end}}
<h2>Summary</h2>
<table><tr><th>stage</th><th>requested req/s</th><th>achieved req/s</th><th>completed</th><th>failed</th>
<th>TTFT p50 ms</th><th>TTFT p90 ms</th><th>TTFT p99 ms</th><th>TPOT p50 ms</th><th>TPOT p99 ms</th><th>ITL p50 ms</th><th>ITL p99 ms</th>
<th>e2e p50 ms</th><th>e2e p99 ms</th><th>req/s</th><th>output tok/s</th><th>goodput req/s</th><th>sched delay p99 ms</th><th></th></tr>
{{range .Rows}}<tr><td>{{.Name}}</td><td>{{.Req}}</td><td>{{f2 .F.Rate.Achieved}}</td><td>{{.F.Requests.Completed}}</td><td>{{.F.Requests.Failed}}</td>
<td>{{ms .F.TTFT.P50}}</td><td>{{ms .F.TTFT.P90}}</td><td>{{ms .F.TTFT.P99}}</td><td>{{ms .F.TPOT.P50}}</td><td>{{ms .F.TPOT.P99}}</td><td>{{ms .F.ITL.P50}}</td><td>{{ms .F.ITL.P99}}</td>
<td>{{ms .F.E2E.P50}}</td><td>{{ms .F.E2E.P99}}</td><td>{{f2 .F.RequestsPerSecond}}</td><td>{{f2 .F.OutputTokensPerSecond}}</td><td>{{f2 .F.GoodputRequestsPerSecond}}</td><td>{{ms3 .F.ScheduleDelay.P99}}</td><td>{{.Note}}</td></tr>
{{end}}</table>
{{if .Errors}}<h2>Errors</h2><table><tr><th>kind</th><th>count</th></tr>{{range .Errors}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>{{end}}
<h2>Charts</h2><div class="charts">{{range .Charts}}<div>{{.}}</div>{{end}}</div>
<h2>Definitions</h2><table>{{range .Defs}}<tr><td>{{index . 0}}</td><td style="text-align:left">{{index . 1}}</td></tr>{{end}}</table>
<p>Generator accuracy: {{.S.Requests.Planned}} sends planned, {{.S.Requests.Sent}} sent; schedule delay (actual − planned send) p50 {{ms3 .S.ScheduleDelay.P50}} ms, p99 {{ms3 .S.ScheduleDelay.P99}} ms, max {{ms3 .S.ScheduleDelay.Max}} ms.</p>
<p>Token counts: {{.S.Tokens.Input}} input, {{.S.Tokens.Output}} output{{if .S.Tokens.Estimated}} ({{.S.Tokens.EstimatedRequests}} requests estimated: no usage from the server){{end}}.</p>
</body></html>
`))

// WriteHTML writes a self-contained report (inline SVG, no scripts).
func (s *Summary) WriteHTML(w io.Writer) error {
	d := reportData{S: s}
	rowOf := func(name string, f Figures, note string) reportRow {
		req := "closed loop"
		if f.Rate.Requested != nil {
			req = fmt.Sprintf("%.2f", *f.Rate.Requested)
		}
		return reportRow{Name: name, F: f, Req: req, Note: note}
	}
	for _, st := range s.Stages {
		note := ""
		if st.EarlyStopped {
			note = "stopped early: " + st.StopReason
		}
		if st.Concurrency > 0 {
			note = fmt.Sprintf("concurrency %d %s", st.Concurrency, note)
		}
		d.Rows = append(d.Rows, rowOf(fmt.Sprint(st.Index), st.Figures, note))
	}
	d.Rows = append(d.Rows, rowOf("all", s.Figures, ""))
	for _, k := range sortedKeys(s.Errors) {
		d.Errors = append(d.Errors, [2]string{k, fmt.Sprint(s.Errors[k])})
	}
	keys := make([]string, 0, len(s.Definitions))
	for k := range s.Definitions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d.Defs = append(d.Defs, [2]string{k, s.Definitions[k]})
	}
	if s.Tokens.Estimated {
		d.Notes = append(d.Notes, "Some token counts are estimated: the server sent no usage for those requests.")
	}
	if s.EarlyStopped {
		d.Notes = append(d.Notes, "A stage was stopped early because latency grew without bound (the server was saturated).")
	}
	if len(s.SLO) > 0 {
		var parts []string
		for _, k := range []string{"ttft", "tpot", "itl", "ntpot", "e2e"} {
			if v, ok := s.SLO[k]; ok {
				parts = append(parts, k+" ≤ "+v)
			}
		}
		d.SLOText = strings.Join(parts, ", ")
	}
	d.Charts = s.charts()
	return reportTmpl.Execute(w, d)
}

func (s *Summary) charts() []template.HTML {
	var out []template.HTML
	if len(s.Stages) > 1 {
		var x, req, ach, thr, good, t50, t99, tp50 []float64
		for _, st := range s.Stages {
			xv := float64(st.Index)
			x = append(x, xv)
			if st.Rate.Requested != nil {
				req = append(req, *st.Rate.Requested)
			} else {
				req = append(req, 0)
			}
			ach = append(ach, st.Rate.Achieved)
			thr = append(thr, st.RequestsPerSecond)
			good = append(good, st.GoodputRequestsPerSecond)
			t50 = append(t50, st.TTFT.P50*1000)
			t99 = append(t99, st.TTFT.P99*1000)
			tp50 = append(tp50, st.TPOT.P50*1000)
		}
		out = append(out, svgLineChart("Rates per stage", "stage", "requests/s", []series{
			{Name: "requested", X: x, Y: req}, {Name: "achieved send", X: x, Y: ach},
			{Name: "completed", X: x, Y: thr}, {Name: "goodput", X: x, Y: good}}, false))
		out = append(out, svgLineChart("Latency per stage", "stage", "ms", []series{
			{Name: "TTFT p50", X: x, Y: t50}, {Name: "TTFT p99", X: x, Y: t99}, {Name: "TPOT p50", X: x, Y: tp50}}, false))
	}
	if len(s.Timeline) > 0 {
		var x, sent, done, failed, ttft, infl, tok []float64
		for i, sec := range s.Timeline {
			x = append(x, float64(i))
			sent = append(sent, float64(sec.Sent))
			done = append(done, float64(sec.Completed))
			failed = append(failed, float64(sec.Failed))
			infl = append(infl, float64(sec.InFlight))
			tok = append(tok, float64(sec.OutputTokens))
			m := 0.0
			if sec.TTFTCount > 0 {
				m = float64(sec.TTFTSumUS) / float64(sec.TTFTCount) / 1000
			}
			ttft = append(ttft, m)
		}
		out = append(out, svgLineChart("Requests per second over time", "seconds since start", "requests", []series{
			{Name: "sent", X: x, Y: sent}, {Name: "completed", X: x, Y: done}, {Name: "failed", X: x, Y: failed}}, false))
		out = append(out, svgLineChart("In flight (max per second)", "seconds since start", "requests", []series{{Name: "in flight", X: x, Y: infl}}, false))
		out = append(out, svgLineChart("Mean TTFT of completions over time", "seconds since start", "ms", []series{{Name: "mean TTFT", X: x, Y: ttft}}, false))
		out = append(out, svgLineChart("Output tokens per second", "seconds since start", "tokens/s", []series{{Name: "output tok/s", X: x, Y: tok}}, false))
	}
	var lat []series
	for _, k := range []string{"ttft", "tpot", "itl", "e2e"} {
		pts := s.Dists[k]
		if len(pts) == 0 {
			continue
		}
		var x, y []float64
		for _, p := range pts {
			x = append(x, p[0])
			y = append(y, p[1]*1000)
		}
		lat = append(lat, series{Name: strings.ToUpper(k), X: x, Y: y})
	}
	if len(lat) > 0 {
		out = append(out, svgLineChart("Latency by percentile (whole run)", "percentile (nines scale)", "ms", lat, true))
	}
	return out
}

// WriteReportFile writes report.html into dir.
func (s *Summary) WriteReportFile(dir string) error {
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		return err
	}
	if err := s.WriteHTML(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
