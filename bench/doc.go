// Package bench compares routing strategies side by side on one machine: for
// each strategy it starts a fresh simulated vLLM fleet (package simulator),
// the strategy's router (the gateway stand-in in direct mode, or the gateway
// in front of an in-process epp built from the same packages cmd/epp wires,
// or the gateway in front of an external ext_proc picker), drives the
// scenario's workload through the gateway with package loadgen, and reads
// the fleet's own counters (requests per server, prefix-cache hits) at every
// stage boundary. It writes summary.json, runs.json and an offline
// report.html, and prints a table per strategy and stage.
//
// Everything runs in this process, on 127.0.0.1: one Go scheduler shares the
// machine's cores between the simulated servers, the picker, the gateway and
// the load generator. The figures that say when the machine, not the fleet,
// limited a run (process CPU, the load generator's schedule delay, the
// simulator's real-time lag) are recorded per stage.
//
// Scenarios are YAML (configs/bench/*.yaml, embedded): a simulator fleet in
// the shape of configs/simulator/fleet.yaml, a loadgen workload (inline or a
// file), a rate ladder that replaces the workload's stages, and the
// strategies to compare. See Scenario and ParseStrategy.
package bench
