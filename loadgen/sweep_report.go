package loadgen

import (
	"html/template"
	"io"
	"os"
	"path/filepath"
)

var sweepTmpl = template.Must(template.New("s").Funcs(template.FuncMap{
	"ms": func(v float64) string { return template.HTMLEscapeString(fmtTick(v * 1000)) },
	"f2": func(v float64) string { return template.HTMLEscapeString(fmtTick(v)) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>loadgen sweep</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1360px}
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f3f3f3}td:last-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:16px}code{background:#f3f3f3;padding:1px 3px}
</style></head><body>
<h1>loadgen sweep</h1>
<p>Model <code>{{.S.Model}}</code> at <code>{{.S.BaseURL}}</code>, {{.S.Replicas}} replica(s).
SLO: {{range $k, $v := .S.SLO}}{{$k}} {{$v}}; {{end}}</p>
<p><b>Highest rate meeting the SLO: {{f2 .S.MaxRateMeetingSLO}} req/s</b>{{if .S.FirstRateFailingSLO}} (first failing probe: {{f2 .S.FirstRateFailingSLO}} req/s){{end}}.
Saturation: kept up at {{f2 .S.SaturationRate}} req/s{{if .S.SaturatedAt}}, fell behind at {{f2 .S.SaturatedAt}} req/s{{end}}.</p>
<div class="charts">{{range .Charts}}<div>{{.}}</div>{{end}}</div>
<table><tr><th>rate</th><th>achieved</th><th>done req/s</th><th>goodput</th><th>SLO attainment</th><th>TTFT p90 ms</th><th>TPOT p90 ms</th><th>e2e p90 ms</th><th>output tok/s</th><th>meets SLO</th><th>kept up</th><th>why</th></tr>
{{range .S.Probes}}<tr><td>{{f2 .Rate}}</td><td>{{f2 .Achieved}}</td><td>{{f2 .Throughput}}</td><td>{{f2 .Goodput}}</td><td>{{f2 .Attainment}}</td><td>{{ms .TTFTP90}}</td><td>{{ms .TPOTP90}}</td><td>{{ms .E2EP90}}</td><td>{{f2 .OutputTokens}}</td><td>{{.MeetsSLO}}</td><td>{{not .Saturated}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>
<p>A probe is one fixed-rate stage. It meets the SLO when at least the attainment share of its requests meet every objective; it kept up unless it was stopped early (latency growing without bound), more than 5% of requests failed, completions fell behind arrivals, or TTFT kept growing through the stage.</p>
</body></html>
`))

// WriteHTML writes a self-contained sweep report (inline SVG, no scripts).
func (s *SweepResult) WriteHTML(w io.Writer) error {
	var x, ttft, tpot, done, good []float64
	for _, p := range s.Probes {
		x = append(x, p.Rate)
		ttft = append(ttft, p.TTFTP90*1000)
		tpot = append(tpot, p.TPOTP90*1000)
		done = append(done, p.Throughput)
		good = append(good, p.Goodput)
	}
	charts := []template.HTML{
		svgLineChart("Latency vs offered rate", "offered rate (req/s)", "ms", []series{{Name: "TTFT p90", X: x, Y: ttft}, {Name: "TPOT p90", X: x, Y: tpot}}, false),
		svgLineChart("Throughput vs offered rate", "offered rate (req/s)", "req/s", []series{{Name: "offered", X: x, Y: x}, {Name: "completed", X: x, Y: done}, {Name: "goodput", X: x, Y: good}}, false),
	}
	return sweepTmpl.Execute(w, struct {
		S      *SweepResult
		Charts []template.HTML
	}{s, charts})
}

// WriteFiles writes sweep.json and sweep.html into dir.
func (s *SweepResult) WriteFiles(dir string) error {
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{{"sweep.json", s.WriteJSON}, {"sweep.html", s.WriteHTML}} {
		fh, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		if err := f.write(fh); err != nil {
			fh.Close()
			return err
		}
		if err := fh.Close(); err != nil {
			return err
		}
	}
	return nil
}
