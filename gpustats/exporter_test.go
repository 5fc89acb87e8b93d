package gpustats

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// amdPage is a device-metrics-exporter page as AMD's exporter writes it: two
// MI300X GCDs on node-a (one serving a pod, one idle), extra clock indices,
// an unrelated family, and a GPU on node-b without an edge sensor line.
const amdPage = `# HELP gpu_gfx_activity GPU graphics activity
# TYPE gpu_gfx_activity gauge
gpu_gfx_activity{card_model="AMD Instinct MI300X",container="vllm",gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0",serial_number="SN-A0"} 87
gpu_gfx_activity{card_model="AMD Instinct MI300X",container="",gpu_id="1",hostname="node-a",namespace="",pod="",serial_number="SN-A1"} 0
gpu_gfx_activity{card_model="AMD Instinct MI250X",gpu_id="0",hostname="node-b",namespace="llm",pod="vllm-1",serial_number="SN-B0"} 12.5
# TYPE gpu_umc_activity gauge
gpu_umc_activity{card_model="AMD Instinct MI300X",gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 41
# TYPE gpu_used_vram gauge
gpu_used_vram{gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 172800
# TYPE gpu_total_vram gauge
gpu_total_vram{gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 192000
gpu_total_vram{gpu_id="1",hostname="node-a"} 192000
# TYPE gpu_free_vram gauge
gpu_free_vram{gpu_id="1",hostname="node-a"} 191000
gpu_free_vram{gpu_id="0",hostname="node-b",namespace="llm",pod="vllm-1"} 60000
# TYPE gpu_package_power gauge
gpu_package_power{gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 1
gpu_package_power{gpu_id="0",hostname="node-b",namespace="llm",pod="vllm-1"} 180
# TYPE gpu_power_usage gauge
gpu_power_usage{gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 655.5
# TYPE gpu_junction_temperature gauge
gpu_junction_temperature{gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 82
# TYPE gpu_edge_temperature gauge
gpu_edge_temperature{gpu_id="0",hostname="node-b",namespace="llm",pod="vllm-1"} 48
# TYPE gpu_memory_temperature gauge
gpu_memory_temperature{gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 70
# TYPE gpu_clock gauge
gpu_clock{clock_index="0",clock_type="GPU_CLOCK_TYPE_SYSTEM",gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 2100
gpu_clock{clock_index="1",clock_type="GPU_CLOCK_TYPE_SYSTEM",gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 1900
gpu_clock{clock_index="0",clock_type="GPU_CLOCK_TYPE_MEMORY",gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 1300
gpu_clock{clock_index="0",clock_type="GPU_CLOCK_TYPE_SOC",gpu_id="0",hostname="node-a",namespace="llm",pod="vllm-0"} 1100
# TYPE gpu_nodes_total gauge
gpu_nodes_total 2
# TYPE go_goroutines gauge
go_goroutines 12
`

// dcgmPage is a dcgm-exporter page with pod attribution on: two H100s.
const dcgmPage = `# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node-n",DCGM_FI_DRIVER_VERSION="550.54.15",container="vllm",namespace="llm",pod="vllm-h100-0"} 93
# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="0",UUID="GPU-aaaa",modelName="NVIDIA H100 80GB HBM3",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 0.5
DCGM_FI_PROF_GR_ENGINE_ACTIVE{gpu="1",UUID="GPU-bbbb",modelName="NVIDIA H100 80GB HBM3",Hostname="node-n"} 0.25
# TYPE DCGM_FI_DEV_MEM_COPY_UTIL gauge
DCGM_FI_DEV_MEM_COPY_UTIL{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 35
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 72000
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 9559
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 612.25
# TYPE DCGM_FI_DEV_POWER_MGMT_LIMIT gauge
DCGM_FI_DEV_POWER_MGMT_LIMIT{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 700
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 66
# TYPE DCGM_FI_DEV_MEMORY_TEMP gauge
DCGM_FI_DEV_MEMORY_TEMP{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 59
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 1980
# TYPE DCGM_FI_DEV_MEM_CLOCK gauge
DCGM_FI_DEV_MEM_CLOCK{gpu="0",UUID="GPU-aaaa",Hostname="node-n",namespace="llm",pod="vllm-h100-0"} 2619
# TYPE DCGM_FI_DEV_XID_ERRORS gauge
DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-aaaa",Hostname="node-n"} 0
`

// serve starts a real HTTP server on 127.0.0.1 answering every request with
// status and body.
func serve(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

func TestExporterRead(t *testing.T) {
	cases := []struct {
		name, page, golden string
	}{
		{"amd device-metrics-exporter", amdPage, "exporter_amd.json"},
		{"nvidia dcgm-exporter", dcgmPage, "exporter_dcgm.json"},
		{"mixed page", amdPage + dcgmPage, "exporter_mixed.json"},
		{"no gpu families", "# TYPE up gauge\nup 1\n", "exporter_none.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := NewExporter(ExporterOptions{URL: serve(t, 200, c.page), Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			golden(t, c.golden, got)
		})
	}
}

func TestExporterErrors(t *testing.T) {
	cases := []struct {
		name, page string
		status     int
		maxBytes   int64
		wantErr    string
		wantGPUs   int
	}{
		{"http 500", "boom", 500, 0, "expected HTTP 200, found 500 Internal Server Error", 0},
		{"not a metrics page", "<html>hello</html>\n", 200, 0, "expected a Prometheus text exposition page", 0},
		{"bad gpu_id", "gpu_gfx_activity{gpu_id=\"x\"} 3\ngpu_gfx_activity{gpu_id=\"1\"} 4\n", 200, 0,
			`gpu_gfx_activity: expected a gpu_id label holding a GPU index, found "x"`, 1},
		{"missing dcgm gpu label", "DCGM_FI_DEV_GPU_UTIL{UUID=\"GPU-1\"} 3\n", 200, 0,
			`DCGM_FI_DEV_GPU_UTIL: expected a gpu label holding a GPU index, found ""`, 0},
		{"page too large", amdPage, 200, 100, "expected a page of at most 100 bytes, found more", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := NewExporter(ExporterOptions{URL: serve(t, c.status, c.page), MaxBytes: c.maxBytes})
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Read(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("want error containing %q, found %v", c.wantErr, err)
			}
			if len(got) != c.wantGPUs {
				t.Errorf("%d GPUs, want %d", len(got), c.wantGPUs)
			}
		})
	}
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		e, _ := NewExporter(ExporterOptions{URL: url})
		if _, err := e.Read(context.Background()); err == nil || !strings.Contains(err.Error(), url) {
			t.Fatalf("want an error naming %s, found %v", url, err)
		}
	})
}

func TestAttach(t *testing.T) {
	gpus, err := ParseExporter(strings.NewReader(amdPage+dcgmPage), fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ep   EndpointRef
		want []string // UniqueIDs
	}{
		{"by pod", EndpointRef{Pod: "vllm-0", Namespace: "llm", Host: "node-a"}, []string{"SN-A0"}},
		{"pod in another namespace falls back to host", EndpointRef{Pod: "vllm-0", Namespace: "other", Host: "node-a"}, []string{"SN-A0", "SN-A1"}},
		{"nvidia pod", EndpointRef{Pod: "vllm-h100-0", Namespace: "llm"}, []string{"GPU-aaaa"}},
		{"host only", EndpointRef{Host: "node-b"}, []string{"SN-B0"}},
		{"unknown pod, no host", EndpointRef{Pod: "nope", Namespace: "llm"}, nil},
		{"nothing", EndpointRef{}, nil},
	}
	eps := make([]EndpointRef, len(cases))
	for i, c := range cases {
		eps[i] = c.ep
	}
	got := Attach(gpus, eps)
	if len(got) != len(eps) {
		t.Fatalf("%d results for %d endpoints", len(got), len(eps))
	}
	for i, c := range cases {
		var ids []string
		for _, g := range got[i] {
			ids = append(ids, g.UniqueID)
		}
		if strings.Join(ids, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: got %v, want %v", c.name, ids, c.want)
		}
	}
}

// TestWriteExporterRoundTrip writes GPUs in the AMD exporter's names and
// parses them back: every value that was present survives, absent ones stay
// absent (power cap is not part of the exporter's names and is dropped).
func TestWriteExporterRoundTrip(t *testing.T) {
	in := DemoGPUs()
	in[1].Pod, in[1].Namespace = "vllm-1", "llm"
	var buf bytes.Buffer
	if err := WriteExporter(&buf, in, "node-x"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "gpu_edge_temperature{") && strings.Count(buf.String(), "gpu_edge_temperature{") != 1 {
		t.Errorf("edge temperature written for the MI300X that has none:\n%s", buf.String())
	}
	out, err := ParseExporter(&buf, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d GPUs back, want %d", len(out), len(in))
	}
	for i := range in {
		want := in[i]
		want.PowerCapWatts = nil
		want.Host = "node-x"
		want.ReadTime = fixedNow
		assertSameGPU(t, out[i], want)
	}
}

func assertSameGPU(t *testing.T, got, want GPU) {
	t.Helper()
	if got.Index != want.Index || got.Product != want.Product || got.UniqueID != want.UniqueID ||
		got.Pod != want.Pod || got.Namespace != want.Namespace || got.Host != want.Host || !got.ReadTime.Equal(want.ReadTime) {
		t.Errorf("identity: got %+v, want %+v", got, want)
	}
	fields := []struct {
		name string
		g, w *float64
	}{
		{"gfx", got.GfxActivityPercent, want.GfxActivityPercent},
		{"mem", got.MemActivityPercent, want.MemActivityPercent},
		{"vram_used", got.VRAMUsedBytes, want.VRAMUsedBytes},
		{"vram_total", got.VRAMTotalBytes, want.VRAMTotalBytes},
		{"power", got.PowerWatts, want.PowerWatts},
		{"power_cap", got.PowerCapWatts, want.PowerCapWatts},
		{"edge", got.EdgeTemperatureCelsius, want.EdgeTemperatureCelsius},
		{"junction", got.JunctionTemperatureCelsius, want.JunctionTemperatureCelsius},
		{"memory", got.MemoryTemperatureCelsius, want.MemoryTemperatureCelsius},
		{"sclk", got.SclkHz, want.SclkHz},
		{"mclk", got.MclkHz, want.MclkHz},
	}
	for _, f := range fields {
		switch {
		case (f.g == nil) != (f.w == nil):
			t.Errorf("gpu %d %s: present %v, want present %v", want.Index, f.name, f.g != nil, f.w != nil)
		case f.g != nil && !near(*f.g, *f.w):
			t.Errorf("gpu %d %s: %v, want %v", want.Index, f.name, *f.g, *f.w)
		}
	}
}

func near(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-9*max(1, a, -a, b, -b)
}

// FuzzParseExporter: no page makes the parser panic, and every GPU it returns
// has a non-negative index (go test -fuzz FuzzParseExporter ./gpustats).
func FuzzParseExporter(f *testing.F) {
	for _, s := range []string{amdPage, dcgmPage, "", "gpu_clock{gpu_id=\"0\"} NaN\n", "gpu_gfx_activity{gpu_id=\"-1\"} 1\n",
		"DCGM_FI_DEV_FB_FREE{gpu=\"0\"} 1e308\nDCGM_FI_DEV_FB_USED{gpu=\"0\"} 1e308\n", "# TYPE gpu_gfx_activity counter\ngpu_gfx_activity{gpu_id=\"3\"} 1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, page string) {
		gpus, _ := ParseExporter(strings.NewReader(page), fixedNow)
		for _, g := range gpus {
			if g.Index < 0 {
				t.Fatalf("negative index: %+v", g)
			}
		}
	})
}
