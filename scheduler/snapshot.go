package scheduler

import (
	"net/netip"
	"sync/atomic"
	"time"
)

var snapSeq atomic.Uint64

// EndpointState is one endpoint as a snapshot sees it.
//
// New per-endpoint data enters here (GPU telemetry did, as GPU): add a field
// group beside M, with its own read time, filled by package endpoints when it builds
// the states it publishes (an endpoints.Enricher runs on the publisher
// goroutine for exactly that); derived values that do not depend on the
// request are computed in NewSnapshot (like KVScore) or in a plugin's
// PrepareSnapshot, never per pick.
type EndpointState struct {
	H *Handle
	// M is the model server's metrics from its last good scrape.
	M Metrics
	// Healthy is false when the endpoint's last scrapes failed.
	Healthy bool
	// GPU is the endpoint's GPU telemetry (set by an endpoints.Enricher;
	// zero, Present false, when there is none or it is stale).
	GPU GPUState

	// Set by NewSnapshot:
	// Fresh: healthy and metrics younger than the staleness threshold.
	Fresh bool
	// KVScore is 1 − KVUsage clamped to 0..1 (request-independent).
	KVScore float64
}

// Snapshot is an immutable view of the pool. Build it with NewSnapshot and
// publish it with Scheduler.Publish; never modify one after publishing.
type Snapshot struct {
	Endpoints []EndpointState
	// Live are the indices of endpoints used for scoring: the fresh ones, or
	// every endpoint when none is fresh (better a stale guess than a 503).
	Live []int32
	// AllStale reports that Live fell back to every endpoint.
	AllStale bool
	BuiltAt  time.Time
	// Seq increases with every snapshot built in this process.
	Seq uint64
	// byAddr maps an IP to the indices of its endpoints (subset hints match by IP).
	byAddr map[netip.Addr][]int32
}

// NewSnapshot builds a snapshot from states (copied; the caller may reuse the
// slice). Metrics older than staleAfter (or never scraped) are not fresh;
// staleAfter <= 0 disables the age check.
func NewSnapshot(states []EndpointState, now time.Time, staleAfter time.Duration) *Snapshot {
	s := &Snapshot{
		Endpoints: make([]EndpointState, len(states)),
		Live:      make([]int32, 0, len(states)),
		BuiltAt:   now,
		Seq:       snapSeq.Add(1),
		byAddr:    make(map[netip.Addr][]int32, len(states)),
	}
	copy(s.Endpoints, states)
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		fresh := e.Healthy && !e.M.UpdatedAt.IsZero()
		if fresh && staleAfter > 0 && now.Sub(e.M.UpdatedAt) > staleAfter {
			fresh = false
		}
		e.Fresh = fresh
		e.KVScore = clamp01(1 - e.M.KVUsage)
		if fresh {
			s.Live = append(s.Live, int32(i))
		}
		a := e.H.Addr
		s.byAddr[a] = append(s.byAddr[a], int32(i))
	}
	if len(s.Live) == 0 && len(s.Endpoints) > 0 {
		s.AllStale = true
		for i := range s.Endpoints {
			s.Live = append(s.Live, int32(i))
		}
	}
	return s
}

// Len is the number of endpoints in the snapshot.
func (s *Snapshot) Len() int { return len(s.Endpoints) }

func clamp01(v float64) float64 {
	if v < 0 || v != v {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}
