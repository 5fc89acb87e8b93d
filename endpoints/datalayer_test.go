package endpoints

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

func TestScrapeConfigFrom(t *testing.T) {
	reg := scheduler.NewRegistry()
	RegisterPlugins(reg)
	build := func(typ string, p scheduler.MapParams) scheduler.Plugin {
		t.Helper()
		pl, err := reg.New(typ, "", p)
		if err != nil {
			t.Fatalf("%s %v: %v", typ, p, err)
		}
		return pl
	}
	tests := []struct {
		name    string
		plugins []scheduler.Plugin
		want    ScrapeConfig
	}{
		{"none: GIE default", nil, DefaultScrapeConfig()},
		{"defaults of both plugins", []scheduler.Plugin{build(MetricsDataSourceType, nil), build(CoreMetricsExtractorType, nil)}, DefaultScrapeConfig()},
		{"https, own path, no verification", []scheduler.Plugin{build(MetricsDataSourceType, scheduler.MapParams{"scheme": "https", "path": "/m", "insecureSkipVerify": true})},
			ScrapeConfig{Scheme: "https", Path: "/m", InsecureSkipVerify: true, EngineLabelKey: EngineLabel, DefaultEngine: "vllm"}},
		{"own engine label, sglang by default", []scheduler.Plugin{build(CoreMetricsExtractorType, scheduler.MapParams{"engineLabelKey": "engine", "defaultEngine": "sglang"})},
			ScrapeConfig{Scheme: "http", Path: "/metrics", EngineLabelKey: "engine", DefaultEngine: "sglang"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ScrapeConfigFrom(tt.plugins)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestDataLayerPluginErrors(t *testing.T) {
	reg := scheduler.NewRegistry()
	RegisterPlugins(reg)
	tests := []struct {
		typ    string
		params scheduler.MapParams
		want   string
	}{
		{MetricsDataSourceType, scheduler.MapParams{"scheme": "ftp"}, `scheme: expected http or https, found "ftp"`},
		{MetricsDataSourceType, scheduler.MapParams{"path": "metrics"}, `path: expected an absolute path such as /metrics, found "metrics"`},
		{CoreMetricsExtractorType, scheduler.MapParams{"defaultEngine": "tgi"}, `defaultEngine: expected one of vllm, sglang, trtllm, triton-tensorrt-llm, trtllm-serve, found "tgi"`},
		{CoreMetricsExtractorType, scheduler.MapParams{"engineLabelKey": ""}, `engineLabelKey: expected a label name, found an empty string`},
		{CoreMetricsExtractorType, scheduler.MapParams{"engineConfigs": "x"}, `engineConfigs: expected a list of engine configs {name, queuedRequestsSpec, ...}, found the value "x"`},
	}
	for _, tt := range tests {
		_, err := reg.New(tt.typ, "", tt.params)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %v: err = %v, want %q", tt.typ, tt.params, err, tt.want)
		}
	}
	// A plugin that is not one of ours cannot configure scraping.
	if _, err := ScrapeConfigFrom([]scheduler.Plugin{otherPlugin{}}); err == nil || !strings.Contains(err.Error(), `plugin "other" (type other-type) is not a data-layer plugin`) {
		t.Errorf("foreign plugin: err = %v", err)
	}
}

type otherPlugin struct{}

func (otherPlugin) Type() string { return "other-type" }
func (otherPlugin) Name() string { return "other" }

// sglangPage is a metrics page with sglang's names only.
const sglangPage = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs 4\n" +
	"# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 6\n" +
	"# TYPE sglang:token_usage gauge\nsglang:token_usage 0.5\n"

func targetOf(t *testing.T, rawURL string) Target {
	t.Helper()
	hp := rawURL[strings.Index(rawURL, "://")+3:]
	ap := netip.MustParseAddrPort(hp)
	return Target{Endpoint: scheduler.Endpoint{Name: ap.String(), Addr: ap.Addr(), Port: ap.Port()}}
}

// TestPoolHonoursScrapeConfig scrapes real loopback servers under the
// data-layer settings: scheme, path, TLS verification, engine label key and
// default engine.
func TestPoolHonoursScrapeConfig(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/custom/metrics", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, sglangPage) })
	tlsSrv := httptest.NewTLSServer(mux) // self-signed, as model servers often are
	defer tlsSrv.Close()

	tests := []struct {
		name   string
		scrape ScrapeConfig
		labels map[string]string
		fresh  bool
		errHas string
	}{
		{"https, custom path, skip verify, sglang by default", ScrapeConfig{Scheme: "https", Path: "/custom/metrics", InsecureSkipVerify: true, DefaultEngine: "sglang"}, nil, true, ""},
		{"https without skip verify: the self-signed cert is refused", ScrapeConfig{Scheme: "https", Path: "/custom/metrics", DefaultEngine: "sglang"}, nil, false, "certificate"},
		{"engine from a custom label key", ScrapeConfig{Scheme: "https", Path: "/custom/metrics", InsecureSkipVerify: true, EngineLabelKey: "my.io/engine"}, map[string]string{"my.io/engine": "sglang"}, true, ""},
		{"custom key absent: default engine vllm finds no vllm names", ScrapeConfig{Scheme: "https", Path: "/custom/metrics", InsecureSkipVerify: true, EngineLabelKey: "my.io/engine"}, map[string]string{EngineLabel: "sglang"}, false, "expected vllm metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sched := scheduler.New(nil)
			opt := fastOptions(t)
			opt.Scrape = tt.scrape
			tg := targetOf(t, tlsSrv.URL)
			tg.Labels = tt.labels
			p := NewPool(sched, Static{tg}, opt)
			defer p.Close()
			if tt.fresh {
				eventually(t, "sglang values scraped", func() bool {
					e := state(sched, tg.HostPort())
					return e != nil && e.Fresh && e.M.Waiting == 4 && e.M.Running == 6 && e.M.KVUsage == 0.5
				})
				return
			}
			eventually(t, "scrape error", func() bool {
				st := p.EndpointStats()
				return len(st) == 1 && strings.Contains(st[0].LastError, tt.errHas)
			})
		})
	}
}

// TestEnricherShapesTheSnapshot: what an Enricher writes is in the published
// snapshot (the place where data other than the model server's metrics enters).
func TestEnricherShapesTheSnapshot(t *testing.T) {
	a := newFakeServer(t, 1, 1, 0.1)
	b := newFakeServer(t, 2, 2, 0.2)
	sched := scheduler.New(nil)
	opt := fastOptions(t)
	ta, tb := a.target(t), b.target(t)
	var calls atomic.Int64
	opt.Enrichers = []Enricher{enrichFunc(func(states []scheduler.EndpointState, _ time.Time) {
		calls.Add(1)
		for i := range states {
			if states[i].H.HostPort() == tb.HostPort() {
				states[i].Healthy = false // e.g. a GPU reported throttled or gone
			}
		}
	})}
	p := NewPool(sched, Static{ta, tb}, opt)
	defer p.Close()
	eventually(t, "a fresh, b out of scoring", func() bool {
		ea, eb := state(sched, ta.HostPort()), state(sched, tb.HostPort())
		return ea != nil && eb != nil && ea.Fresh && eb.M.Waiting == 2 && !eb.Fresh && !eb.Healthy
	})
	if s := sched.Snapshot(); len(s.Live) != 1 || s.Endpoints[s.Live[0]].H.HostPort() != ta.HostPort() {
		t.Fatalf("live endpoints %v, want only %s", s.Live, ta.HostPort())
	}
	if calls.Load() == 0 {
		t.Fatal("enricher never called")
	}
}

type enrichFunc func([]scheduler.EndpointState, time.Time)

func (f enrichFunc) Enrich(s []scheduler.EndpointState, now time.Time) { f(s, now) }
