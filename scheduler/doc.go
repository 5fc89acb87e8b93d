// Package scheduler is fastepp's decision core: endpoint identity and metrics,
// immutable pool snapshots swapped through an atomic pointer, the request view,
// plugin interfaces (filters, scorers, pickers, profile handlers, saturation
// detectors), the plan a config turns into, and Pick — the per-request scoring
// loop that runs without locks and without allocating.
//
// It imports only the standard library. Plugin implementations
// live in package scorers (data-layer plugins in package endpoints); config
// decoding lives in package config. The plugin contract — what runs
// concurrently, what must not block or allocate, what may be mutated — is
// written at the top of plugin.go and on each interface.
//
// Hot-path rules (docs/ARCHITECTURE.md): readers load one snapshot pointer;
// request-independent work is done when a snapshot is built or published
// (SnapshotPreparer), never lazily on the pick path; scratch
// space comes from a Cycle that the caller keeps and reuses; in-flight counters
// on each Handle make a burst between two scrapes spread over the pool.
package scheduler
