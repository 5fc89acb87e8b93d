package simulator

import (
	"bufio"
	"io"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/fastepp/fastepp/simulator/engine"
)

// family builds one metric family; samples are added with the helpers below.
type family struct{ mf *dto.MetricFamily }

func newFamily(name, help string, t dto.MetricType) family {
	return family{&dto.MetricFamily{Name: &name, Help: &help, Type: t.Enum()}}
}

// labels turns alternating name, value pairs into label pairs sorted by name
// (the order vLLM's Python client prints them in).
func labels(kv ...string) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		n, v := kv[i], kv[i+1]
		out = append(out, &dto.LabelPair{Name: &n, Value: &v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func (f family) gauge(v float64, lp []*dto.LabelPair) family {
	f.mf.Metric = append(f.mf.Metric, &dto.Metric{Label: lp, Gauge: &dto.Gauge{Value: &v}})
	return f
}

func (f family) counter(v float64, lp []*dto.LabelPair) family {
	f.mf.Metric = append(f.mf.Metric, &dto.Metric{Label: lp, Counter: &dto.Counter{Value: &v}})
	return f
}

func (f family) histogram(h engine.Histogram, lp []*dto.LabelPair) family {
	buckets := make([]*dto.Bucket, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		c, ub := cum, b
		buckets[i] = &dto.Bucket{CumulativeCount: &c, UpperBound: &ub}
	}
	count, sum := h.Count, h.Sum
	f.mf.Metric = append(f.mf.Metric, &dto.Metric{Label: lp, Histogram: &dto.Histogram{SampleCount: &count, SampleSum: &sum, Bucket: buckets}})
	return f
}

// vllmFamilies renders the engine snapshot with vLLM V1's metric names,
// help texts and labels (engine, model_name), as in
// ../shared/testdata/vllm-v1-metrics.txt.
func (s *Server) vllmFamilies(st engine.Stats, nowUnix float64) []*dto.MetricFamily {
	lp := labels("engine", "0", "model_name", s.cfg.ModelName)
	g, c := dto.MetricType_GAUGE, dto.MetricType_COUNTER
	h := dto.MetricType_HISTOGRAM
	fams := []family{
		newFamily("vllm:num_requests_running", "Number of requests in model execution batches.", g).gauge(float64(st.Running), lp),
		newFamily("vllm:num_requests_waiting", "Number of requests waiting to be processed.", g).gauge(float64(st.Waiting), lp),
		newFamily("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", g).gauge(st.KVUsage, lp),
		newFamily("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens.", c).counter(float64(st.PrefixQueries), lp),
		newFamily("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.", c).counter(float64(st.PrefixHits), lp),
		newFamily("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", c).counter(float64(st.Preemptions), lp),
		newFamily("vllm:prompt_tokens_total", "Number of prefill tokens processed.", c).counter(float64(st.PromptTokens), lp),
		newFamily("vllm:generation_tokens_total", "Number of generation tokens processed.", c).counter(float64(st.GenerationTokens), lp),
	}
	success := newFamily("vllm:request_success_total", "Count of successfully processed requests.", c)
	for _, reason := range []string{"stop", "length", "abort"} {
		success = success.counter(float64(st.Success[reason]), labels("engine", "0", "finished_reason", reason, "model_name", s.cfg.ModelName))
	}
	fams = append(fams, success,
		newFamily("vllm:request_prompt_tokens", "Number of prefill tokens processed.", h).histogram(st.PromptLen, lp),
		newFamily("vllm:request_generation_tokens", "Number of generation tokens processed.", h).histogram(st.GenerationLen, lp),
		newFamily("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", h).histogram(st.TTFT, lp),
		newFamily("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", h).histogram(st.ITL, lp),
		newFamily("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", h).histogram(st.E2E, lp),
		newFamily("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", h).histogram(st.Queue, lp),
	)
	if len(s.cfg.LoRAAdapters) > 0 {
		fams = append(fams, newFamily("vllm:lora_requests_info", "Running stats on lora requests.", g).gauge(nowUnix, labels(
			"max_lora", strconv.Itoa(st.MaxLoRAs),
			"running_lora_adapters", strings.Join(st.RunningLoRAs, ","),
			"waiting_lora_adapters", strings.Join(st.WaitingLoRAs, ","))))
	}
	ec := s.eng.Config()
	fams = append(fams, newFamily("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", g).gauge(1, labels(
		"block_size", strconv.Itoa(st.BlockSize),
		"cache_dtype", "auto",
		"calculate_kv_scales", "False",
		"cpu_offload_gb", "0",
		"enable_prefix_caching", pyBool(!ec.DisablePrefixCaching),
		"engine", "0",
		"gpu_memory_utilization", strconv.FormatFloat(ec.GPUMemoryUtilization, 'g', -1, 64),
		"is_attention_free", "False",
		"num_cpu_blocks", "None",
		"num_gpu_blocks", strconv.Itoa(st.NumGPUBlocks),
		"sliding_window", "None",
		"swap_space", "4")))
	out := make([]*dto.MetricFamily, len(fams))
	for i, f := range fams {
		out[i] = f.mf
	}
	return out
}

// sglangFamilies renders the snapshot with SGLang's names (label model_name),
// for --engine sglang; the picker's data layer reads num_queue_reqs,
// num_running_reqs, token_usage and cache_config_info{page_size,num_pages}.
func (s *Server) sglangFamilies(st engine.Stats) []*dto.MetricFamily {
	lp := labels("model_name", s.cfg.ModelName)
	g, c, h := dto.MetricType_GAUGE, dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM
	hit := 0.0
	if st.PrefixQueries > 0 {
		hit = float64(st.PrefixHits) / float64(st.PrefixQueries)
	}
	fams := []family{
		newFamily("sglang:num_running_reqs", "The number of running requests.", g).gauge(float64(st.Running), lp),
		newFamily("sglang:num_queue_reqs", "The number of requests in the waiting queue.", g).gauge(float64(st.Waiting), lp),
		newFamily("sglang:token_usage", "The token usage", g).gauge(st.KVUsage, lp),
		newFamily("sglang:cache_hit_rate", "The cache hit rate", g).gauge(hit, lp),
		newFamily("sglang:prompt_tokens_total", "Number of prefill tokens processed.", c).counter(float64(st.PromptTokens), lp),
		newFamily("sglang:generation_tokens_total", "Number of generation tokens processed.", c).counter(float64(st.GenerationTokens), lp),
		newFamily("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", h).histogram(st.TTFT, lp),
		newFamily("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", h).histogram(st.ITL, lp),
		newFamily("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", h).histogram(st.E2E, lp),
		newFamily("sglang:cache_config_info", "Cache configuration", g).gauge(1, labels(
			"model_name", s.cfg.ModelName, "page_size", strconv.Itoa(st.BlockSize), "num_pages", strconv.Itoa(st.NumGPUBlocks))),
	}
	out := make([]*dto.MetricFamily, len(fams))
	for i, f := range fams {
		out[i] = f.mf
	}
	return out
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// writeFamilies writes families in the Prometheus text format.
func writeFamilies(w io.Writer, fams []*dto.MetricFamily) error {
	bw := bufio.NewWriterSize(w, 16<<10)
	for _, mf := range fams {
		if _, err := expfmt.MetricFamilyToText(bw, mf); err != nil {
			return err
		}
	}
	return bw.Flush()
}
