package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/scheduler"
)

// poolMetrics are the pool-level gauges (GIE names) and our scrape metrics.
type poolMetrics struct {
	scrapeDur    prometheus.Histogram
	scrapeErrors prometheus.Counter
}

func newPoolMetrics(reg prometheus.Registerer) *poolMetrics {
	m := &poolMetrics{
		scrapeDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fastepp_endpoint_scrape_duration_seconds",
			Help:    "Duration of one model-server /metrics scrape (fetch and parse).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastepp_endpoint_scrape_errors_total",
			Help: "Failed model-server /metrics scrapes.",
		}),
	}
	reg.MustRegister(m.scrapeDur, m.scrapeErrors)
	return m
}

func (m *poolMetrics) onScrape(_ *scheduler.Handle, took time.Duration, err error) {
	m.scrapeDur.Observe(took.Seconds())
	if err != nil {
		m.scrapeErrors.Inc()
	}
}

// register adds gauges read from the pool and the plan at scrape time.
func (m *poolMetrics) register(reg prometheus.Registerer, pool *endpoints.Pool, plan *scheduler.Plan) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("inference_pool_ready_pods", "Endpoints in scoring (healthy, fresh metrics).", func() float64 { return float64(pool.Stats().Ready) })
	gauge("inference_pool_average_kv_cache_utilization", "Average KV-cache utilization of the pool's scored endpoints (0..1).", func() float64 { return pool.Stats().AvgKVUsage })
	gauge("inference_pool_average_queue_size", "Average waiting requests of the pool's scored endpoints.", func() float64 { return pool.Stats().AvgWaiting })
	gauge("fastepp_pool_endpoints", "Endpoints known to the pool (scored or not).", func() float64 { return float64(pool.Stats().Endpoints) })
	reg.MustRegister(&inflightCollector{pool: pool, desc: prometheus.NewDesc("fastepp_endpoint_inflight_requests",
		"Requests this picker dispatched to the endpoint and not yet finished.", []string{"endpoint"}, nil)})
	var reporters []scheduler.StatsReporter
	for _, p := range plan.Plugins {
		if r, ok := p.(scheduler.StatsReporter); ok {
			reporters = append(reporters, r)
		}
	}
	if len(reporters) > 0 {
		reg.MustRegister(&pluginStatsCollector{reporters: reporters})
	}
}

// pluginStatsCollector exports the statistics of every plugin that reports
// some (scheduler.StatsReporter), each labelled with the plugin's name. It
// knows no plugin type: a new plugin's statistics appear without a change here.
type pluginStatsCollector struct {
	reporters []scheduler.StatsReporter
}

// Describe sends nothing: the metric names come from the plugins at collect
// time (an unchecked collector).
func (c *pluginStatsCollector) Describe(chan<- *prometheus.Desc) {}

func (c *pluginStatsCollector) Collect(ch chan<- prometheus.Metric) {
	var stats []scheduler.Stat
	for _, r := range c.reporters {
		stats = r.AppendStats(stats[:0])
		for _, s := range stats {
			vt := prometheus.GaugeValue
			if s.Counter {
				vt = prometheus.CounterValue
			}
			desc := prometheus.NewDesc(s.Name, s.Help, []string{"plugin"}, nil)
			m, err := prometheus.NewConstMetric(desc, vt, s.Value, r.Name())
			if err != nil { // a bad name from a plugin fails the scrape, not the process
				m = prometheus.NewInvalidMetric(desc, err)
			}
			ch <- m
		}
	}
}

// inflightCollector reports per-endpoint in-flight counters (labels resolved
// at scrape time, never on the request path).
type inflightCollector struct {
	pool *endpoints.Pool
	desc *prometheus.Desc
}

func (c *inflightCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *inflightCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.pool.EndpointStats() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(e.Handle.Inflight()), e.Handle.HostPort())
	}
}
