package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/scheduler"
)

// DefaultPoolName is the pool `name` label value of the inference_pool_*
// metrics when poolMetrics.PoolName is empty (no --pool-name).
const DefaultPoolName = "default"

// poolMetrics are the pool-level gauges (GIE names) and our scrape metrics.
type poolMetrics struct {
	// PoolName is the `name` label of the inference_pool_* metrics, as GIE
	// labels them with the InferencePool's name; set it before register.
	// Empty means DefaultPoolName.
	PoolName string

	scrapeDur prometheus.Histogram
}

func newPoolMetrics(reg prometheus.Registerer) *poolMetrics {
	m := &poolMetrics{
		scrapeDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fastepp_endpoint_scrape_duration_seconds",
			Help:    "Duration of one model-server /metrics scrape (fetch and parse).",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
	}
	reg.MustRegister(m.scrapeDur)
	return m
}

// onScrape is the pool's endpoints.Options.OnScrape. Failed scrapes are
// counted by the pool per endpoint and exported by endpointCollector.
func (m *poolMetrics) onScrape(_ *scheduler.Handle, took time.Duration, _ error) {
	m.scrapeDur.Observe(took.Seconds())
}

// register adds gauges read from the pool and the plan at scrape time.
func (m *poolMetrics) register(reg prometheus.Registerer, pool *endpoints.Pool, plan *scheduler.Plan) {
	name := m.PoolName
	if name == "" {
		name = DefaultPoolName
	}
	poolLabel := prometheus.Labels{"name": name}
	gauge := func(metric, help string, labels prometheus.Labels, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: metric, Help: help, ConstLabels: labels}, f))
	}
	gauge("inference_pool_ready_pods", "The number of ready pods in the inference server pool: endpoints in scoring (healthy, fresh metrics).",
		poolLabel, func() float64 { return float64(pool.Stats().Ready) })
	gauge("inference_pool_average_kv_cache_utilization", "The average kv cache utilization (0..1) of the pool's scored endpoints.",
		poolLabel, func() float64 { return pool.Stats().AvgKVUsage })
	gauge("inference_pool_average_queue_size", "The average number of requests pending in the model server queue, over the pool's scored endpoints.",
		poolLabel, func() float64 { return pool.Stats().AvgWaiting })
	gauge("fastepp_pool_endpoints", "Endpoints known to the pool (scored or not).",
		nil, func() float64 { return float64(pool.Stats().Endpoints) })
	reg.MustRegister(newEndpointCollector(pool, name))
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

// endpointCollector reports the per-endpoint series from one read of the
// pool's endpoint records at scrape time (labels are never resolved on the
// request path): in-flight counts, failed scrapes, and GIE's per-pod queue
// gauge. Only endpoints in the pool now have series, so a pool whose members
// change does not accumulate them.
type endpointCollector struct {
	pool     *endpoints.Pool
	poolName string
	inflight *prometheus.Desc
	errors   *prometheus.Desc
	queue    *prometheus.Desc
}

func newEndpointCollector(pool *endpoints.Pool, poolName string) *endpointCollector {
	return &endpointCollector{
		pool:     pool,
		poolName: poolName,
		inflight: prometheus.NewDesc("fastepp_endpoint_inflight_requests",
			"Requests this picker dispatched to the endpoint and not yet finished.", []string{"endpoint"}, nil),
		errors: prometheus.NewDesc("fastepp_endpoint_scrape_errors_total",
			"Failed model-server /metrics scrapes of the endpoint (since it joined the pool).", []string{"endpoint"}, nil),
		queue: prometheus.NewDesc("inference_pool_per_pod_queue_size",
			"The total number of requests pending in the model server queue for each underlying pod (last good scrape).",
			[]string{"name", "model_server_pod"}, nil),
	}
}

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inflight
	ch <- c.errors
	ch <- c.queue
}

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	stats := c.pool.EndpointStats()
	seen := make(map[string]bool, len(stats))
	queue := make(map[string]float64, len(stats)) // per pod: endpoints of one pod (several ports) add up
	var pods []string
	for _, e := range stats {
		pod := e.Handle.Name
		if pod == "" {
			pod = e.Handle.HostPort()
		}
		if _, ok := queue[pod]; !ok {
			pods = append(pods, pod)
		}
		queue[pod] += float64(e.Metrics.Waiting)
		hp := e.Handle.HostPort()
		if seen[hp] {
			continue // one series per label value
		}
		seen[hp] = true
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(e.Handle.Inflight()), hp)
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(e.ScrapeErrors), hp)
	}
	for _, pod := range pods {
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, queue[pod], c.poolName, pod)
	}
}
