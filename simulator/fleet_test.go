package simulator

import (
	"net/http"
	"strings"
	"testing"

	simconfig "github.com/fastepp/fastepp/configs/simulator"
	"github.com/fastepp/fastepp/simulator/engine"
)

func TestSampleFleetParses(t *testing.T) {
	text, err := simconfig.FS.ReadFile("fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	specs, port, err := ParseFleet("fleet.yaml", text, DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	var gpus []string
	for _, s := range specs {
		gpus = append(gpus, s.GPU)
	}
	if port != 8000 || strings.Join(gpus, ",") != "mi300x,mi300x,mi300x,mi300x,mi325x,mi325x,h100,h100" {
		t.Fatalf("port %d, gpus %v", port, gpus)
	}
	if specs[6].Faults.LatencyMultiplier != 1.5 || specs[0].Faults.LatencyMultiplier != 1 || specs[6].MaxNumSeqs != 0 {
		t.Fatalf("overrides: %+v / %+v", specs[6], specs[0])
	}
	p, err := engine.DefaultProfiles()
	if err != nil {
		t.Fatal(err)
	}
	for i, sp := range specs {
		if _, err := sp.Resolve(p, "x", uint64(i)); err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
	}
}

func TestFleetErrors(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"empty", "", "found an empty file"},
		{"no servers", "base_port: 9000\n", "expected at least one group"},
		{"unknown key", "servers:\n  - count: 1\n    gpus: mi300x\n", "field gpus not found"},
		{"bad count", "servers:\n  - count: 0\n", "count: expected 1..1024, found 0"},
		{"bad port", "base_port: 70000\nservers:\n  - count: 1\n", "base_port: expected 1..65535"},
		{"wrong type", "defaults:\n  max_num_seqs: lots\nservers:\n  - count: 1\n", "cannot unmarshal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ParseFleet("f.yaml", []byte(c.yaml), DefaultSpec())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	p, _ := engine.DefaultProfiles()
	sp := DefaultSpec()
	sp.GPU = "tpu"
	if _, err := sp.Resolve(p, "x", 0); err == nil || !strings.Contains(err.Error(), `unknown GPU profile "tpu"`) {
		t.Fatalf("unknown gpu: %v", err)
	}
}

func TestStartFleetServesEachPort(t *testing.T) {
	p, _ := engine.DefaultProfiles()
	var cfgs []Config
	for i, gpu := range []string{"mi300x", "h200"} {
		sp := DefaultSpec()
		sp.GPU = gpu
		c, err := sp.Resolve(p, "sim-"+gpu, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	f, err := StartFleet(cfgs, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range f.Servers {
		if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
			t.Fatalf("listening on %s, want 127.0.0.1", s.Addr())
		}
		resp, err := http.Get("http://" + s.Addr() + "/gpu/metrics")
		if err != nil {
			t.Fatal(err)
		}
		fams := parseMetrics(t, resp.Body)
		resp.Body.Close()
		if _, ok := fams["vllm:num_requests_running"]; ok {
			t.Error("/gpu/metrics carries vLLM families")
		}
		model := fams["gpu_total_vram"].GetMetric()[0].GetLabel()
		found := false
		for _, l := range model {
			if l.GetName() == "card_model" && l.GetValue() == s.Engine().Config().GPU.CardModel {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: card_model label missing: %v", s.Config().Name, model)
		}
	}
}
