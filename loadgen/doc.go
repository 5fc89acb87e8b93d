// Package loadgen owns load generation for OpenAI-compatible inference
// servers: the YAML config (field names follow inference-perf so configs port
// over), arrival processes (constant, poisson with gamma burstiness,
// concurrent, trace_replay), synthetic workloads (random, shared_prefix,
// multi_turn, trace), a streaming OpenAI client, latency recording in HDR
// histograms, the outputs (summary.json, per-request CSV, offline
// report.html), rate sweeps and capacity plans.
//
// It depends on no EPP or simulator code: it only speaks HTTP to a server.
//
// Metric definitions (also written into every report):
//   - TTFT: time from sending the request to the first content token.
//   - ITL: gap between consecutive content chunks of one stream.
//   - TPOT: (e2e − TTFT) / (output tokens − 1), per request.
//   - NTPOT: e2e / output tokens, per request.
//   - e2e: time from sending the request to the end of the response.
//   - schedule delay: actual send time − planned send time (the generator's
//     own accuracy; open loop means the plan never waits for the server).
//   - goodput: completed requests per second that meet every configured SLO.
package loadgen
