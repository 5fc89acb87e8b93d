// Package scheduler is fastepp's decision core: endpoint identity and metrics,
// immutable pool snapshots swapped through an atomic pointer, the request view,
// plugin interfaces (filters, scorers, pickers, profile handlers, saturation
// detectors), the plan a config turns into, and Pick — the per-request scoring
// loop that runs without locks and without allocating.
//
// It imports only the standard library. Plugin implementations live in package
// scorers; config decoding lives in package config.
//
// Hot-path rules (see ARCHITECTURE.md): readers load one snapshot pointer;
// request-independent scores are computed when a snapshot is built; scratch
// space comes from a Cycle that the caller keeps and reuses; in-flight counters
// on each Handle make a burst between two scrapes spread over the pool.
package scheduler
