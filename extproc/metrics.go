package extproc

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// HTTP statuses the server answers with; each has a pre-resolved counter.
var statusCodes = [...]int{200, 400, 404, 408, 413, 429, 500, 503}

// status500 is the index of 500 in statusCodes: any other status counts there.
const status500 = len(statusCodes) - 2

func statusIndex(code int) int {
	for i, c := range statusCodes {
		if c == code {
			return i
		}
	}
	return status500
}

// gieErrorCode is GIE v1.5.0's error_code label for an HTTP status
// (pkg/common/error: BadRequest, NotFound, ResourceExhausted,
// ServiceUnavailable, Internal). A request whose client stalled (408) counts
// as BadRequest, like a body over the limit (413).
func gieErrorCode(code int) string {
	switch code {
	case 400, 408, 413:
		return "BadRequest"
	case 404:
		return "NotFound"
	case 429:
		return "ResourceExhausted"
	case 503:
		return "ServiceUnavailable"
	}
	return "Internal"
}

// GIE's size buckets (bytes): requests from 64 B to 1 GiB, responses from
// 1 B to 64 KiB (32778 is GIE's value, kept so that bucket boundaries match).
var (
	requestSizeBuckets = []float64{
		64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
		131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608,
		16777216, 33554432, 67108864, 134217728, 268435456, 536870912, 1073741824,
	}
	responseSizeBuckets = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536}
)

// maxModelPairs bounds the cache of pre-resolved per-model metric children.
const maxModelPairs = 1024

// metrics are the request-path metrics. A nil *metrics records nothing.
type metrics struct {
	reqTotal *prometheus.CounterVec
	errTotal *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inTok    *prometheus.HistogramVec
	outTok   *prometheus.HistogramVec
	reqSize  *prometheus.HistogramVec
	respSize *prometheus.HistogramVec
	running  *prometheus.GaugeVec
	e2e      prometheus.Histogram
	byStatus [len(statusCodes)]prometheus.Counter

	mu     sync.RWMutex
	models map[[2]string]*modelMetrics
}

// modelMetrics are the children for one (model_name, target_model_name)
// label pair.
type modelMetrics struct {
	req      prometheus.Counter
	errs     [len(statusCodes)]prometheus.Counter
	duration prometheus.Observer
	inTok    prometheus.Observer
	outTok   prometheus.Observer
	reqSize  prometheus.Observer
	respSize prometheus.Observer
	running  prometheus.Gauge
}

// E2EBuckets resolve 100 ns .. 10 ms (doubling), then a coarse tail.
func e2eBuckets() []float64 {
	b := prometheus.ExponentialBuckets(100e-9, 2, 18) // 100ns .. 13.1ms
	return append(b, 0.05, 0.1, 0.5, 1)
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	model := []string{"model_name", "target_model_name"}
	m := &metrics{
		reqTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inference_objective_request_total",
			Help: "Counter of inference objective requests broken out for each model and target model.",
		}, model),
		errTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inference_objective_request_error_total",
			Help: "Counter of inference objective requests errors broken out for each model and target model.",
		}, append(model, "error_code")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "inference_objective_request_duration_seconds",
			Help: "Inference objective response latency distribution in seconds for each model and target model.",
			Buckets: []float64{0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3,
				4, 5, 6, 8, 10, 15, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600},
		}, model),
		inTok: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inference_objective_input_tokens",
			Help:    "Inference objective input token count distribution for requests in each model.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 24),
		}, model),
		outTok: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inference_objective_output_tokens",
			Help:    "Inference objective output token count distribution for requests in each model.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 20),
		}, model),
		reqSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inference_objective_request_sizes",
			Help:    "Inference objective requests size distribution in bytes for each model and target model.",
			Buckets: requestSizeBuckets,
		}, model),
		respSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inference_objective_response_sizes",
			Help:    "Inference objective responses size distribution in bytes for each model and target model.",
			Buckets: responseSizeBuckets,
		}, model),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inference_objective_running_requests",
			Help: "Inference objective number of running requests in each model.",
		}, []string{"model_name"}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "inference_extension_scheduler_e2e_duration_seconds",
			Help:    "End-to-end scheduling latency distribution in seconds (100ns..10ms resolution).",
			Buckets: e2eBuckets(),
		}),
		models: map[[2]string]*modelMetrics{},
	}
	status := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastepp_extproc_requests_total",
		Help: "Requests answered by the ext_proc server, by the HTTP status the picker decided (200 = routed).",
	}, []string{"code"})
	for i, c := range statusCodes {
		m.byStatus[i] = status.WithLabelValues(strconv.Itoa(c))
	}
	for _, c := range []prometheus.Collector{m.reqTotal, m.errTotal, m.duration, m.inTok, m.outTok, m.reqSize, m.respSize, m.running, m.e2e, status} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// model returns the pre-resolved children for a pair of label values (known
// model names or OtherModel, see Server.modelLabel). Beyond maxModelPairs
// distinct pairs the children are resolved but not cached.
func (m *metrics) model(name, target string) *modelMetrics {
	k := [2]string{name, target}
	m.mu.RLock()
	mm := m.models[k]
	m.mu.RUnlock()
	if mm != nil {
		return mm
	}
	mm = &modelMetrics{
		req:      m.reqTotal.WithLabelValues(name, target),
		duration: m.duration.WithLabelValues(name, target),
		inTok:    m.inTok.WithLabelValues(name, target),
		outTok:   m.outTok.WithLabelValues(name, target),
		reqSize:  m.reqSize.WithLabelValues(name, target),
		respSize: m.respSize.WithLabelValues(name, target),
		running:  m.running.WithLabelValues(name),
	}
	for i, c := range statusCodes {
		if c != 200 {
			mm.errs[i] = m.errTotal.WithLabelValues(name, target, gieErrorCode(c))
		}
	}
	m.mu.Lock()
	if old := m.models[k]; old != nil {
		mm = old
	} else if len(m.models) < maxModelPairs {
		m.models[k] = mm
	}
	m.mu.Unlock()
	return mm
}
