// Package endpoints owns the pool of model-server endpoints: discovery (a
// static list, a watched file; Kubernetes in package endpoints/kube) behind the Source
// interface, one scraper goroutine per endpoint that fetches and parses the
// server's Prometheus metrics page, and the Pool that keeps one
// scheduler.Handle per endpoint for its lifetime and publishes immutable
// scheduler.Snapshots to a scheduler.Scheduler.
//
// It is the data layer: the config's data-layer plugins (metrics-data-source,
// core-metrics-extractor; RegisterPlugins) decode into a ScrapeConfig that
// says where each page is (scheme, path, TLS verification) and which engine's
// metric names to read; Enrichers let other per-endpoint data (GPU telemetry
// next) into the snapshot on the publisher goroutine. Scheduling plugins
// never scrape: they read what the snapshot carries.
//
// Engines (vllm, sglang, trtllm, triton-tensorrt-llm; more or other metric
// names with core-metrics-extractor's engineConfigs, EngineConfig) are chosen
// by a pod label, by default inference.networking.k8s.io/engine-type (default
// engine vllm). Several series of one metric (several model_name or
// data-parallel engine labels) are combined as docs/COMPAT.md says: counts
// are summed, usage takes the maximum; the model_name values become
// Metrics.Models.
//
// The endpoints file (FileSource) is bounded (MaxTargetsFileBytes) and parsed
// only when its bytes change; an unchanged file costs one stat per poll.
//
// Metrics pages are parsed by a targeted scanner that only decodes the few
// families an engine needs (expfmt costs ~400 µs per vLLM page, over the scrape
// budget); a fuzz test checks it against expfmt on the extracted values.
package endpoints
