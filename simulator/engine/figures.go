package engine

import (
	"fmt"
	"io"
	"time"
)

// Figures are the validation numbers of one configuration, measured by
// running the engine in virtual time (not by evaluating the formula alone).
type Figures struct {
	NumGPUBlocks  int
	MaxModelLen   int
	TTFTCold1k    time.Duration // 1,024-token prompt, empty cache
	TTFTWarm1k    time.Duration // the same prompt again (cached but the last block)
	TTFTCold8k    time.Duration // 8,192-token prompt
	TTFTWarm8k    time.Duration
	Decode1       time.Duration // per output token, one request with a 1k context
	Decode64      time.Duration // per output token, 64 concurrent requests with 1k contexts
	Decode64Batch int           // batch size the batch-64 figure was measured at
}

// Characterize measures Figures for cfg.
func Characterize(cfg Config) (Figures, error) {
	e, err := New(cfg)
	if err != nil {
		return Figures{}, err
	}
	f := Figures{NumGPUBlocks: e.NumGPUBlocks(), MaxModelLen: e.MaxModelLen()}
	ttft := func(n int) (cold, warm time.Duration, err error) {
		e, err := New(cfg)
		if err != nil {
			return 0, 0, err
		}
		p := syntheticPrompt(1, n)
		a, b := NewRequest(p, 1, false, "", 0), NewRequest(p, 1, false, "", 0)
		if _, errs := Simulate(e, &VirtualClock{}, []Arrival{{0, a}, {time.Hour, b}}); len(errs) > 0 {
			return 0, 0, fmt.Errorf("%d-token prompt: %v", n, errs)
		}
		return a.tokenTimes[0], b.tokenTimes[0] - time.Hour, nil
	}
	if f.TTFTCold1k, f.TTFTWarm1k, err = ttft(1024); err != nil {
		return f, err
	}
	if f.TTFTCold8k, f.TTFTWarm8k, err = ttft(8192); err != nil {
		return f, err
	}
	decode := func(batch int) (time.Duration, int, error) {
		e, err := New(cfg)
		if err != nil {
			return 0, 0, err
		}
		const out = 129
		arr := make([]Arrival, batch)
		for i := range arr {
			arr[i] = Arrival{0, NewRequest(syntheticPrompt(uint32(i+2), 1024), out, false, "", 0)}
		}
		if _, errs := Simulate(e, &VirtualClock{}, arr); len(errs) > 0 {
			return 0, 0, fmt.Errorf("batch %d: %v", batch, errs)
		}
		// The last request to start decoding has every other request beside it
		// for its first 100 tokens (they finish at most a few steps earlier).
		last := arr[batch-1].Req
		running := e.cfg.MaxNumSeqs
		return (last.tokenTimes[100] - last.tokenTimes[0]) / 100, min(batch, running), nil
	}
	if f.Decode1, _, err = decode(1); err != nil {
		return f, err
	}
	if f.Decode64, f.Decode64Batch, err = decode(64); err != nil {
		return f, err
	}
	return f, nil
}

func syntheticPrompt(seed uint32, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = (seed*2654435761 + uint32(i)*40503) % VocabSize
	}
	return out
}

// Print writes the figures as a small table.
func (f Figures) Print(w io.Writer, title string) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%8.2f ms", float64(d)/1e6) }
	fmt.Fprintf(w, "%s\n", title)
	fmt.Fprintf(w, "  KV cache                 %d blocks, max model len %d\n", f.NumGPUBlocks, f.MaxModelLen)
	fmt.Fprintf(w, "  TTFT 1k prompt   cold %s   warm %s\n", ms(f.TTFTCold1k), ms(f.TTFTWarm1k))
	fmt.Fprintf(w, "  TTFT 8k prompt   cold %s   warm %s\n", ms(f.TTFTCold8k), ms(f.TTFTWarm8k))
	fmt.Fprintf(w, "  decode per token batch 1 %s   batch %d %s   (1k context)\n", ms(f.Decode1), f.Decode64Batch, ms(f.Decode64))
}
