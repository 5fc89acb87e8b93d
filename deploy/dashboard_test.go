package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// panel is the part of a Grafana panel the checks read.
type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name, Type string
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T, path string) (dashboard, []panel) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return d, all
}

// metricName matches the metric names of the families the dashboards read.
var metricName = regexp.MustCompile(`\b(?:inference_[a-z0-9_]+|fastepp_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+|bbr_[a-z0-9_]+|vllm:[a-z0-9_:]+)`)

// familyOf strips the series suffixes of histograms and summaries.
func familyOf(name string) string {
	for _, s := range []string{"_bucket", "_count", "_sum"} {
		if b, ok := strings.CutSuffix(name, s); ok {
			return b
		}
	}
	return name
}

// queried returns the metric families panels query, by title.
func queried(ps []panel) map[string][]string {
	m := map[string][]string{}
	for _, p := range ps {
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				f := familyOf(n)
				if !slices.Contains(m[f], p.Title) {
					m[f] = append(m[f], p.Title)
				}
			}
		}
	}
	return m
}

// TestDashboard checks deploy/dashboards/fastepp.json: it is a valid
// dashboard (unique panel ids, every query on the DS_PROMETHEUS variable);
// every metric it queries exists, either on a running epp's /metrics or as
// a metric name in the Go sources of the picker (series that appear only
// once requests flow); and it carries GIE v1.5.0's Inference Gateway panels
// and metrics, except flow control (fastepp has none) and the body-based
// router (not part of the picker).
func TestDashboard(t *testing.T) {
	t.Parallel()
	d, ps := loadDashboard(t, filepath.Join("dashboards", "fastepp.json"))
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q: both are needed for import", d.Title, d.UID)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || (v.Name == "DS_PROMETHEUS" && v.Type == "datasource")
	}
	if !hasDS {
		t.Errorf("no DS_PROMETHEUS datasource variable")
	}
	ids := map[int]string{}
	for _, p := range ps {
		if prev, ok := ids[p.ID]; ok {
			t.Errorf("panel id %d used by %q and %q", p.ID, prev, p.Title)
		}
		ids[p.ID] = p.Title
		if p.Type != "timeseries" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %+v, expected ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || refs[tg.RefID] {
				t.Errorf("panel %q: empty query or repeated refId %q", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
	}

	ours := queried(ps)
	live := liveFamilies(t)
	src := sourceNames(t)
	gieDash := filepath.Join(moduleDir(t, "v1.5.0"), "tools", "dashboards", "inference_gateway.json")
	_, gieAll := loadDashboard(t, gieDash)
	// GIE's panels that concern the picker and the model servers: not flow
	// control (fastepp has none), not the body-based router (another
	// component).
	var gie []panel
	for _, p := range gieAll {
		skip := false
		for _, tg := range p.Targets {
			skip = skip || strings.Contains(tg.Expr, "inference_extension_flow_control_") || strings.Contains(tg.Expr, "bbr_")
		}
		if !skip {
			gie = append(gie, p)
		}
	}
	gieQueried := queried(gie)
	for name, panels := range ours {
		switch {
		case strings.HasPrefix(name, "vllm:"):
			// The model servers' own metrics, as GIE's dashboard reads them.
			if gieQueried[name] == nil {
				t.Errorf("%s (panels %q): not a vLLM metric GIE's dashboard reads", name, panels)
			}
		case live[name], src[name]:
		default:
			t.Errorf("%s (panels %q): epp does not export it (not on a running epp's /metrics, not a metric name in cmd/epp, extproc, endpoints or scorers)", name, panels)
		}
	}
	for name, panels := range gieQueried {
		if ours[name] == nil {
			t.Errorf("GIE's dashboard reads %s (panels %q); fastepp's does not", name, panels)
		}
	}
	titles := map[string]bool{}
	for _, p := range ps {
		titles[p.Title] = true
	}
	for _, p := range gie {
		if p.Type == "timeseries" && !titles[p.Title] {
			t.Errorf("GIE's panel %q is missing", p.Title)
		}
	}
	for _, want := range []string{"fastepp_endpoint_inflight_requests", "fastepp_endpoint_scrape_errors_total",
		"fastepp_endpoint_scrape_duration_seconds", "inference_extension_prefix_indexer_hit_ratio", "inference_extension_prefix_indexer_size",
		"fastepp_prefix_indexer_bytes", "inference_extension_scheduler_e2e_duration_seconds", "fastepp_extproc_requests_total"} {
		if ours[want] == nil {
			t.Errorf("no panel reads %s", want)
		}
	}
}

func moduleDir(t *testing.T, version string) string {
	t.Helper()
	d, err := kubetest.ModuleDir("sigs.k8s.io/gateway-api-inference-extension", version)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// sourceNames returns the metric names written as string literals in the
// picker's non-test Go sources.
func sourceNames(t *testing.T) map[string]bool {
	t.Helper()
	lit := regexp.MustCompile(`"((?:inference_|fastepp_)[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, dir := range []string{"cmd/epp", "extproc", "endpoints", "scorers"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			for _, m := range lit.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// liveFamilies runs epp on a static pool of one (unreachable) endpoint and
// returns the metric families its /metrics serves.
func liveFamilies(t *testing.T) map[string]bool {
	t.Helper()
	ports := freePorts(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, eppBinary(t), "--endpoints", fmt.Sprintf("127.0.0.1:%d", ports[3]), "--secure-serving=false",
		"--bind-address", "127.0.0.1", "--grpc-port", fmt.Sprint(ports[0]), "--grpc-health-port", fmt.Sprint(ports[1]),
		"--metrics-port", fmt.Sprint(ports[2]), "--tracing=false")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[2])
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil && resp.StatusCode == http.StatusOK {
			parser := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := parser.TextToMetricFamilies(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("%s does not parse: %v", url, err)
			}
			names := map[string]bool{}
			for n := range fams {
				names[n] = true
			}
			return names
		}
		if resp != nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("epp's %s did not answer within 15s (%v); its log:\n%s", url, err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePorts returns n ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
