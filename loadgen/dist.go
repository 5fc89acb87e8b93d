package loadgen

import (
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/stat/distuv"
)

// sampler draws token counts. It is not safe for concurrent use; each
// generator owns its samplers and their random source.
type sampler interface {
	sample() int
	mean() float64
}

type fixedSampler int

func (f fixedSampler) sample() int   { return int(f) }
func (f fixedSampler) mean() float64 { return float64(f) }

type distSampler struct {
	r        distuv.Rander
	min, max int
	m        float64
}

func (d *distSampler) sample() int {
	v := d.r.Rand()
	if math.IsNaN(v) {
		v = d.m
	}
	n := int(math.Round(v))
	if n < d.min {
		n = d.min
	}
	if n > d.max {
		n = d.max
	}
	return n
}

func (d *distSampler) mean() float64 { return d.m }

// newSampler builds a sampler for a normalized Length.
func newSampler(l *Length, src rand.Source) sampler {
	if l == nil {
		return fixedSampler(0)
	}
	if l.Dist == nil {
		return fixedSampler(l.Fixed)
	}
	return newDistSampler(l.Dist, src)
}

// newDistSampler builds a sampler for a normalized Distribution: normal
// clipped to [min,max]; lognormal with the given mean and std_dev of the
// values themselves; uniform over [min,max]; poisson with the given mean;
// fixed at the mean.
func newDistSampler(d *Distribution, src rand.Source) sampler {
	mean, sd, lo, hi := *d.Mean, *d.StdDev, *d.Min, *d.Max
	var r distuv.Rander
	switch d.Type {
	case "fixed":
		return fixedSampler(clampInt(int(math.Round(mean)), lo, hi))
	case "uniform":
		r = distuv.Uniform{Min: float64(lo), Max: float64(hi) + 0.999, Src: src}
		return &distSampler{r: floorRander{r}, min: lo, max: hi, m: mean}
	case "lognormal":
		// Moments of the values → parameters of the underlying normal.
		s2 := math.Log(1 + (sd*sd)/(mean*mean))
		r = distuv.LogNormal{Mu: math.Log(mean) - s2/2, Sigma: math.Sqrt(s2), Src: src}
	case "poisson":
		if mean <= 0 {
			return fixedSampler(clampInt(0, lo, hi))
		}
		r = distuv.Poisson{Lambda: mean, Src: src}
	default: // normal
		if sd == 0 {
			return fixedSampler(clampInt(int(math.Round(mean)), lo, hi))
		}
		r = distuv.Normal{Mu: mean, Sigma: sd, Src: src}
	}
	return &distSampler{r: r, min: lo, max: hi, m: mean}
}

type floorRander struct{ r distuv.Rander }

func (f floorRander) Rand() float64 { return math.Floor(f.r.Rand()) }

func clampInt(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}
