package scheduler

import "time"

// GPUField names one value of GPUState; GPUState.Has says which are present.
type GPUField uint16

// The values a GPUState may carry. A field whose bit is not set in Has is
// absent (the source or card does not expose it), never 0.
const (
	GPUActivity     GPUField = 1 << iota // GfxActivity
	GPUMemActivity                       // MemActivity
	GPUPower                             // PowerWatts
	GPUPowerCap                          // PowerCapWatts
	GPUEdgeTemp                          // EdgeCelsius
	GPUJunctionTemp                      // JunctionCelsius
	GPUMemoryTemp                        // MemoryCelsius
	GPUSclk                              // SclkHz
	GPUMclk                              // MclkHz
	GPUVRAMUsed                          // VRAMUsedBytes
	GPUVRAMTotal                         // VRAMTotalBytes
)

// GPUState is the GPU telemetry of one endpoint (all the GPUs its server
// uses: a tensor-parallel server has several), from a source other than the
// model server's metrics page (package endpoints fills it through an
// Enricher). The zero value means "no telemetry": Present is false.
//
// Several GPUs are folded into one value per field, the worst one: the
// highest activity, temperature and power-to-cap ratio, the lowest clock
// (tensor-parallel ranks step in lockstep, so the slowest sets the pace);
// VRAM is summed.
type GPUState struct {
	// Present: telemetry for this endpoint was read within the staleness
	// bound. When false every other field is zero and means nothing.
	Present bool
	// Has says which value fields below are present.
	Has GPUField
	// Count is how many GPUs were attached to the endpoint.
	Count int
	// Product is the GPU's product name ("AMD Instinct MI300X"), "" when
	// unknown (the first GPU's, when they differ).
	Product string
	// ReadAt is when the oldest of the endpoint's GPUs was read.
	ReadAt time.Time

	GfxActivity, MemActivity     float64 // 0..1
	PowerWatts, PowerCapWatts    float64 // of the GPU nearest its cap
	EdgeCelsius, JunctionCelsius float64
	MemoryCelsius                float64
	SclkHz, MclkHz               float64
	VRAMUsedBytes                float64
	VRAMTotalBytes               float64
}

// HasAll reports whether every field in f is present (and Present is set).
func (g *GPUState) HasAll(f GPUField) bool { return g.Present && g.Has&f == f }
