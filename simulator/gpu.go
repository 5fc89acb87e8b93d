package simulator

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fastepp/fastepp/simulator/engine"
)

// gpuWindow is the shortest interval activity is averaged over; scrapes
// closer together than this see the previous value.
const gpuWindow = 200 * time.Millisecond

// gpuSampler turns the engine's cumulative busy time into activity
// percentages averaged over the interval between samples.
type gpuSampler struct {
	mu            sync.Mutex
	at            time.Duration
	busy, memBusy time.Duration
	gfx, umc      float64 // 0..1
}

func (g *gpuSampler) sample(now time.Duration, st engine.Stats, mbu float64) (gfx, umc float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if dt := now - g.at; dt >= gpuWindow {
		busy := float64(st.Busy-g.busy) / float64(dt)
		mem := float64(st.MemBusy-g.memBusy) / float64(dt)
		g.gfx = clamp01(busy)
		// Memory-bound steps stream HBM at the profile's bandwidth efficiency;
		// compute-bound steps still read weights and KV, at roughly a third of that.
		g.umc = clamp01(mem*mbu + (busy-mem)*mbu/3)
		g.at, g.busy, g.memBusy = now, st.Busy, st.MemBusy
	}
	return g.gfx, g.umc
}

func clamp01(v float64) float64 { return min(max(v, 0), 1) }

// gpuFamilies renders one series per simulated GPU (tensor-parallel size of
// them) in AMD device-metrics-exporter names (docs/GPUSTATS.md), derived from
// the engine: activity from step occupancy, VRAM from weights + reserve +
// the whole KV pool (flat after start, as vLLM preallocates it), power from activity, temperature from power, clock from
// activity. Units follow the exporter: %, MB, W, °C, MHz.
func (s *Server) gpuFamilies(st engine.Stats, now time.Duration) []*dto.MetricFamily {
	ec := s.eng.Config()
	gp := ec.GPU
	tp := ec.TensorParallel
	gfx, umc := s.gpu.sample(now, st, gp.MBU)
	totalMB := gp.HBMGB * 1e3
	// VRAM as vLLM holds it: weights, activation reserve and the whole KV
	// pool (every block, used or not) are allocated at start, so used VRAM is
	// flat, about gpu_memory_utilization of HBM (less with num_gpu_blocks).
	usedMB := min((st.WeightBytes+st.ReserveBytes+float64(st.NumGPUBlocks)*st.KVBlockBytes)/float64(tp)/1e6, totalMB)
	power := gp.IdleWatts + (gp.TDPWatts-gp.IdleWatts)*gfx
	junction := 35 + 50*power/gp.TDPWatts
	sclk := gp.MaxSclkMHz * (0.35 + 0.65*gfx)

	g := dto.MetricType_GAUGE
	fams := []family{
		newFamily("gpu_gfx_activity", "GPU graphics (compute) activity, percent", g),
		newFamily("gpu_umc_activity", "GPU memory controller activity, percent", g),
		newFamily("gpu_used_vram", "used VRAM, MB", g),
		newFamily("gpu_total_vram", "total VRAM, MB", g),
		newFamily("gpu_free_vram", "free VRAM, MB", g),
		newFamily("gpu_power_usage", "GPU power usage, W", g),
		newFamily("gpu_package_power", "GPU package power, W", g),
		newFamily("gpu_junction_temperature", "GPU junction (hotspot) temperature, C", g),
		newFamily("gpu_clock", "GPU clock, MHz", g),
	}
	var edge family
	if gp.EdgeSensor {
		edge = newFamily("gpu_edge_temperature", "GPU edge temperature, C", g)
	}
	for i := range tp {
		base := []string{
			"gpu_id", strconv.Itoa(i),
			"serial_number", fmt.Sprintf("SIM%08X%02d", uint32(s.cfg.Seed), i),
			"card_model", gp.CardModel,
			"card_series", gp.CardSeries,
			"card_vendor", gp.Vendor,
			"hostname", s.cfg.Hostname,
			"pod", s.cfg.Name,
			"namespace", s.cfg.Namespace,
			"container", "vllm",
		}
		lp := labels(base...)
		fams[0].gauge(100*gfx, lp)
		fams[1].gauge(100*umc, lp)
		fams[2].gauge(usedMB, lp)
		fams[3].gauge(totalMB, lp)
		fams[4].gauge(totalMB-usedMB, lp)
		fams[5].gauge(power, lp)
		fams[6].gauge(power, lp)
		fams[7].gauge(junction, lp)
		fams[8].gauge(sclk, labels(append(base, "clock_index", "0", "clock_type", "GPU_CLOCK_TYPE_SYSTEM")...))
		fams[8].gauge(gp.MclkMHz, labels(append(base, "clock_index", "0", "clock_type", "GPU_CLOCK_TYPE_MEMORY")...))
		if gp.EdgeSensor {
			edge.gauge(junction-8, lp)
		}
	}
	out := make([]*dto.MetricFamily, 0, len(fams)+1)
	for _, f := range fams {
		out = append(out, f.mf)
	}
	if gp.EdgeSensor {
		out = append(out, edge.mf)
	}
	return out
}
