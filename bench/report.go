package bench

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"runtime"
	"strings"
	"time"
)

// chartJS is Chart.js 4.5.0 (MIT), vendored (assets/README.md): the report
// embeds it, so it opens from disk with no network.
//
//go:embed assets/chart.umd.min.js
var chartJS string

// palette gives the built-in strategies stable colours; others take the rest.
var palette = map[string]string{
	"round-robin":     "#7f7f7f",
	"random":          "#bcbd22",
	"least-request":   "#ff7f0e",
	"epp-gie-default": "#1f77b4",
	"epp":             "#2ca02c",
	"epp-gpu-aware":   "#d62728",
}

var extraColors = []string{"#9467bd", "#8c564b", "#e377c2", "#17becf", "#393b79", "#637939"}

type reportStrategy struct {
	Name   string         `json:"name"`
	Color  string         `json:"color"`
	Stages []StageSummary `json:"stages"`
	// PerServer is requests per server over the whole run, in Servers order.
	PerServer []int64 `json:"perServer"`
}

type reportData struct {
	Labels     []string         `json:"labels"`
	Servers    []string         `json:"servers"`
	Strategies []reportStrategy `json:"strategies"`
}

type reportPage struct {
	Title       string
	Scenario    *Scenario
	Fleet       string
	Workload    string
	Ladder      string
	Started     string
	Took        string
	Repeats     int
	Cores       int
	Strategies  []Strategy
	Compare     []string
	Table       string
	Limited     bool
	Definitions [][2]string
	Data        template.JS
	ChartJS     template.JS
}

// WriteHTML writes the offline report: the scenario, the comparison, charts
// (latency per stage, throughput, prefix-cache hit ratio, load balance,
// machine load) and the table.
func (res *Result) WriteHTML(w io.Writer, sum *Summary) error {
	sc := res.Scenario
	d := reportData{}
	for _, st := range sc.Workload.Load.Stages {
		d.Labels = append(d.Labels, fmt.Sprintf("stage %d: %s req/s", len(d.Labels)+1, trimFloat(st.Rate)))
	}
	for _, runs := range res.Runs {
		if len(runs) > 0 {
			d.Servers = runs[0].Names
			break
		}
	}
	extra := 0
	for _, s := range sum.Strategies {
		c, ok := palette[s.Name]
		if !ok {
			c = extraColors[extra%len(extraColors)]
			extra++
		}
		rs := reportStrategy{Name: s.Name, Color: c, Stages: s.Stages}
		for _, n := range d.Servers {
			rs.PerServer = append(rs.PerServer, s.PerEndpointRequests[n])
		}
		d.Strategies = append(d.Strategies, rs)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	var tb strings.Builder
	res.WriteTable(&tb, sum)
	page := reportPage{
		Title: "bench: " + sc.Name, Scenario: sc, Fleet: sc.FleetLine(), Workload: sc.WorkloadLine(), Ladder: sc.LadderLine(),
		Started: res.Started.UTC().Format(time.RFC3339), Took: dur(res.Took), Repeats: res.Repeats, Cores: runtime.NumCPU(),
		Strategies: res.Strategies, Compare: Compare(sum), Table: strings.TrimSpace(tb.String()),
		Data: template.JS(data), ChartJS: template.JS(chartJS),
	}
	for _, s := range sum.Strategies {
		for _, st := range s.Stages {
			page.Limited = page.Limited || st.Machine.Limited
		}
	}
	page.Definitions = [][2]string{
		{"TTFT", "time from sending the request to its first content token (loadgen)"},
		{"TPOT", "(e2e − TTFT) ÷ (output tokens − 1), per request"},
		{"E2E", "time from sending the request to the end of its response"},
		{"output tok/s", "output tokens of the stage's requests ÷ the stage's send window, or until its last request finished if later"},
		{"goodput", "requests per second of the stage meeting every SLO of the workload"},
		{"hit ratio", "prefix-cache hits ÷ prompt tokens looked up, summed over the fleet (vLLM's vllm:prefix_cache_hits ÷ queries) in the stage's time window"},
		{"requests per server", "requests each simulated server finished (its own counters)"},
		{"cpu", "this process's CPU time (fleet, picker, gateway and loadgen share it) ÷ wall time ÷ cores"},
	}
	return reportTmpl.Execute(w, page)
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1320px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}.meta b{color:#222}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:10px 12px;background:#fff}
.card h3{font-size:14px;margin:0 0 6px}.card p{margin:4px 0 0;color:#666;font-size:12px}
.chart{position:relative;height:280px}
pre{background:#f7f7f7;border:1px solid #e3e3e3;border-radius:6px;padding:10px;overflow-x:auto;font-size:12px;line-height:1.35}
.cmp{background:#f3f9f3;border:1px solid #cfe6cf;border-radius:6px;padding:8px 12px;font-family:ui-monospace,monospace;font-size:13px;white-space:pre}
.warn{background:#fff6e5;border:1px solid #f0d9a8;border-radius:6px;padding:8px 12px}
table.defs td{padding:2px 10px 2px 0;vertical-align:top}table.defs td:first-child{font-weight:600;white-space:nowrap}
</style></head><body>
<h1>{{.Title}}</h1>
<div class="meta">{{if .Scenario.Description}}<p>{{.Scenario.Description}}</p>{{end}}
<b>fleet</b> {{.Fleet}} · <b>workload</b> {{.Workload}} · <b>ladder</b> {{.Ladder}}<br>
<b>strategies</b> {{range $i, $s := .Strategies}}{{if $i}}, {{end}}{{$s.Name}}{{end}} · each on a fresh fleet, same workload and seed{{if gt .Repeats 1}} · {{.Repeats}} repeats (medians; ranges in the table){{end}}<br>
<b>started</b> {{.Started}} · <b>took</b> {{.Took}} · <b>machine</b> {{.Cores}} cores shared by the fleet, picker, gateway and load generator</div>
{{if .Compare}}<h2>epp at the top stage</h2><div class="cmp">{{range .Compare}}{{.}}
{{end}}</div>{{end}}
{{if .Limited}}<p class="warn">Some stages were limited by this machine (CPU ≥ 90%, load generator schedule delay p99 ≥ 50 ms, or simulator lag ≥ 2%): they are marked ! in the table; the comparison there measures the machine as much as the routing.</p>{{end}}
<h2>Latency per stage</h2>
<div class="grid">
<div class="card"><h3>TTFT p90 (log scale)</h3><div class="chart"><canvas id="ttft90"></canvas></div></div>
<div class="card"><h3>TTFT p50 (log scale)</h3><div class="chart"><canvas id="ttft50"></canvas></div></div>
<div class="card"><h3>TPOT p90</h3><div class="chart"><canvas id="tpot90"></canvas></div></div>
<div class="card"><h3>End-to-end latency p90 (log scale)</h3><div class="chart"><canvas id="e2e90"></canvas></div></div>
</div>
<h2>Throughput and cache</h2>
<div class="grid">
<div class="card"><h3>Output tokens per second</h3><div class="chart"><canvas id="tok"></canvas></div><p>Over the stage's send window, or until its last request finished if later: a strategy that falls behind spreads its tokens over a longer window.</p></div>
<div class="card"><h3>Goodput (requests/s meeting the SLO)</h3><div class="chart"><canvas id="good"></canvas></div></div>
<div class="card"><h3>Prefix-cache hit ratio</h3><div class="chart"><canvas id="hit"></canvas></div><p>Hits ÷ prompt tokens looked up, summed over the fleet's servers.</p></div>
<div class="card"><h3>Load balance: requests per server (whole run)</h3><div class="chart"><canvas id="bal"></canvas></div></div>
</div>
<h2>Machine</h2>
<div class="grid">
<div class="card"><h3>CPU used (% of {{.Cores}} cores)</h3><div class="chart"><canvas id="cpu"></canvas></div><p>Fleet, picker, gateway and load generator run in one process; near 100% the machine, not the simulated fleet, sets the pace.</p></div>
<div class="card"><h3>Load generator schedule delay p99 (ms)</h3><div class="chart"><canvas id="sched"></canvas></div><p>How late requests left against their open-loop plan.</p></div>
</div>
<h2>Table</h2>
<pre>{{.Table}}</pre>
<h2>Definitions</h2>
<table class="defs">{{range .Definitions}}<tr><td>{{index . 0}}</td><td>{{index . 1}}</td></tr>{{end}}</table>
<script>{{.ChartJS}}</script>
<script>
const D = {{.Data}};
Chart.defaults.animation = false;
Chart.defaults.font.size = 12;
Chart.defaults.maintainAspectRatio = false;
function pick(s, f) { return s.stages.map(f); }
function lines(id, f, opts) {
  opts = opts || {};
  new Chart(document.getElementById(id), {
    type: opts.bar ? 'bar' : 'line',
    data: { labels: D.labels, datasets: D.strategies.map(s => ({
      label: s.name, data: pick(s, f), borderColor: s.color, backgroundColor: s.color,
      borderWidth: 2, pointRadius: 3, tension: 0 })) },
    options: { scales: { y: { type: opts.log ? 'logarithmic' : 'linear', beginAtZero: !opts.log, max: opts.max,
      title: { display: true, text: opts.unit || '' } } },
      plugins: { legend: { position: 'bottom' }, tooltip: { callbacks: { label: c => c.dataset.label + ': ' + fmt(c.parsed.y, opts.unit) } } } }
  });
}
function fmt(v, unit) {
  if (v === null || v === undefined) return '-';
  if (unit === 's') return v < 1 ? (v * 1000).toFixed(0) + ' ms' : v.toFixed(2) + ' s';
  return (Math.round(v * 100) / 100).toString() + (unit ? ' ' + unit : '');
}
const pos = v => (v > 0 ? v : null);
lines('ttft90', st => pos(st.ttft_seconds.p90), { log: true, unit: 's' });
lines('ttft50', st => pos(st.ttft_seconds.p50), { log: true, unit: 's' });
lines('tpot90', st => st.tpot_seconds.p90, { unit: 's' });
lines('e2e90', st => pos(st.e2e_seconds.p90), { log: true, unit: 's' });
lines('tok', st => st.output_tokens_per_second, { bar: true, unit: 'tokens/s' });
lines('good', st => st.goodput_requests_per_second, { bar: true, unit: 'req/s' });
lines('hit', st => 100 * st.prefix_cache_hit_ratio, { bar: true, unit: '%', max: 100 });
lines('cpu', st => 100 * st.machine.cpu_cores / Math.max(1, st.machine.cores), { unit: '%', max: 100 });
lines('sched', st => 1000 * st.machine.schedule_delay_p99_seconds, { unit: 'ms' });
new Chart(document.getElementById('bal'), {
  type: 'bar',
  data: { labels: D.servers, datasets: D.strategies.map(s => ({ label: s.name, data: s.perServer, backgroundColor: s.color })) },
  options: { scales: { y: { beginAtZero: true, title: { display: true, text: 'requests' } } }, plugins: { legend: { position: 'bottom' } } }
});
</script>
</body></html>
`))
