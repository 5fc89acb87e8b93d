package gpustats_test

import (
	"context"
	"testing"

	"github.com/fastepp/fastepp/gpustats"
	"github.com/fastepp/fastepp/simulator"
	"github.com/fastepp/fastepp/simulator/engine"
)

// TestExporterReadsSimulator scrapes a real in-process simulator fleet's
// /gpu/metrics (AMD exporter names) with the exporter source and attaches the
// GPUs to the simulated pods.
func TestExporterReadsSimulator(t *testing.T) {
	p, err := engine.DefaultProfiles()
	if err != nil {
		t.Fatal(err)
	}
	specs := []struct {
		name, gpu string
		tp        int
	}{{"sim-mi300x", "mi300x", 2}, {"sim-h100", "h100", 1}}
	var cfgs []simulator.Config
	for i, s := range specs {
		sp := simulator.DefaultSpec()
		sp.GPU, sp.TensorParallelSize = s.gpu, s.tp
		c, err := sp.Resolve(p, s.name, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	f, err := simulator.StartFleet(cfgs, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	for i, s := range f.Servers {
		src, err := gpustats.New(gpustats.Options{Kind: "exporter", ExporterURL: "http://" + s.Addr() + "/gpu/metrics"})
		if err != nil {
			t.Fatal(err)
		}
		gpus, err := src.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		gp := s.Engine().Config().GPU
		if len(gpus) != specs[i].tp {
			t.Fatalf("%s: %d GPUs, want %d (tensor parallel size)", specs[i].name, len(gpus), specs[i].tp)
		}
		for j, g := range gpus {
			if g.Index != j || g.Product != gp.CardModel || g.Pod != specs[i].name || g.Namespace != "default" || g.Host != "sim-node" {
				t.Errorf("%s gpu %d: identity %+v", specs[i].name, j, g)
			}
			if g.VRAMTotalBytes == nil || *g.VRAMTotalBytes != gp.HBMGB*1e9 {
				t.Errorf("%s gpu %d: vram total %v, want %g bytes", specs[i].name, j, g.VRAMTotalBytes, gp.HBMGB*1e9)
			}
			if g.VRAMUsedBytes == nil || *g.VRAMUsedBytes <= 0 || *g.VRAMUsedBytes > *g.VRAMTotalBytes {
				t.Errorf("%s gpu %d: vram used %v", specs[i].name, j, g.VRAMUsedBytes)
			}
			if g.MclkHz == nil || *g.MclkHz != gp.MclkMHz*1e6 {
				t.Errorf("%s gpu %d: mclk %v, want %g Hz", specs[i].name, j, g.MclkHz, gp.MclkMHz*1e6)
			}
			for name, v := range map[string]*float64{"gfx": g.GfxActivityPercent, "mem": g.MemActivityPercent, "power": g.PowerWatts,
				"junction": g.JunctionTemperatureCelsius, "sclk": g.SclkHz} {
				if v == nil {
					t.Errorf("%s gpu %d: %s absent", specs[i].name, j, name)
				}
			}
			if (g.EdgeTemperatureCelsius != nil) != gp.EdgeSensor {
				t.Errorf("%s gpu %d: edge present %v, profile edge_sensor %v", specs[i].name, j, g.EdgeTemperatureCelsius != nil, gp.EdgeSensor)
			}
		}
		got := gpustats.Attach(gpus, []gpustats.EndpointRef{{Pod: specs[i].name, Namespace: "default"}, {Pod: "other", Namespace: "default"}})
		if len(got[0]) != specs[i].tp || len(got[1]) != 0 {
			t.Errorf("%s: attached %d and %d GPUs", specs[i].name, len(got[0]), len(got[1]))
		}
	}
}
