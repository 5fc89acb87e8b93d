package simulator

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fastepp/fastepp/simulator/engine"
)

const testModel = "meta-llama/Llama-3.1-8B-Instruct"

func testEngineConfig(t testing.TB, gpu string) engine.Config {
	t.Helper()
	p, err := engine.DefaultProfiles()
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.GPU(gpu)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.Model("llama-3.1-8b")
	if err != nil {
		t.Fatal(err)
	}
	return engine.Config{GPU: g, Model: m}
}

func newTestServer(t *testing.T, mod func(*Config)) (*Server, *httptest.Server) {
	t.Helper()
	cfg := Config{Name: "sim-0", Engine: testEngineConfig(t, "mi300x"), LoRAAdapters: []string{"sql-lora"}}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { s.Close(); ts.Close() }) // stopping the engine first ends in-flight handlers
	return s, ts
}

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Text         string          `json:"text"`
		Message      json.RawMessage `json:"message"`
		FinishReason string          `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		TotalTokens         int `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
}

func TestCompletionAndWarmPrefix(t *testing.T) {
	_, ts := newTestServer(t, nil)
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 60)
	body := `{"model":"` + testModel + `","prompt":` + mustJSON(prompt) + `,"max_tokens":5}`
	var first, second completion
	for i, out := range []*completion{&first, &second} {
		resp, b := post(t, ts.URL+"/v1/completions", body)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, b)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("request %d: %v in %s", i, err, b)
		}
	}
	if first.Object != "text_completion" || first.Model != testModel || !strings.HasPrefix(first.ID, "cmpl-") || len(first.Choices) != 1 {
		t.Fatalf("response shape: %+v", first)
	}
	if first.Choices[0].FinishReason != "length" || first.Usage.CompletionTokens != 5 || first.Choices[0].Text == "" {
		t.Fatalf("choice: %+v usage %+v", first.Choices[0], first.Usage)
	}
	want := len(engine.Tokenize(nil, prompt)) + 1 // + BOS
	if first.Usage.PromptTokens != want || first.Usage.TotalTokens != want+5 {
		t.Fatalf("usage %+v, want %d prompt tokens", first.Usage, want)
	}
	if first.Usage.PromptTokensDetails.CachedTokens != 0 {
		t.Fatalf("cold request reports %d cached tokens", first.Usage.PromptTokensDetails.CachedTokens)
	}
	if got, want := second.Usage.PromptTokensDetails.CachedTokens, (want-1)/16*16; got != want {
		t.Fatalf("warm request: cached_tokens %d, want %d", got, want)
	}
}

// sse reads a text/event-stream body into its data payloads, noting when each arrived.
func sse(t *testing.T, resp *http.Response) ([]string, []time.Time) {
	t.Helper()
	var events []string
	var at []time.Time
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "data: ") {
			t.Fatalf("SSE line without data prefix: %q", line)
		}
		events = append(events, strings.TrimPrefix(line, "data: "))
		at = append(at, time.Now())
	}
	return events, at
}

func TestChatStreamWithUsage(t *testing.T) {
	s, ts := newTestServer(t, nil)
	body := `{"model":"` + testModel + `","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello there"}]}],` +
		`"max_completion_tokens":6,"max_tokens":99,"stream":true,"stream_options":{"include_usage":true}}`
	start := time.Now()
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	events, at := sse(t, resp)
	// role chunk, 6 token chunks, usage chunk, [DONE]
	if len(events) != 9 || events[8] != "[DONE]" {
		t.Fatalf("events %d: %q", len(events), events)
	}
	type chunk struct {
		Object  string `json:"object"`
		Choices []struct {
			Delta        map[string]string `json:"delta"`
			FinishReason *string           `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	var cs []chunk
	for _, e := range events[:8] {
		var c chunk
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatalf("%v in %s", err, e)
		}
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("object %q", c.Object)
		}
		cs = append(cs, c)
		if !strings.Contains(e, `"usage":`) {
			t.Fatalf("chunk without usage key (include_usage): %s", e)
		}
	}
	if cs[0].Choices[0].Delta["role"] != "assistant" || cs[0].Usage != nil {
		t.Fatalf("first chunk %+v", cs[0])
	}
	for i := 1; i <= 5; i++ {
		if cs[i].Choices[0].FinishReason != nil || cs[i].Choices[0].Delta["content"] == "" {
			t.Fatalf("token chunk %d: %s", i, events[i])
		}
	}
	if fr := cs[6].Choices[0].FinishReason; fr == nil || *fr != "length" {
		t.Fatalf("last token chunk: %s", events[6])
	}
	if len(cs[7].Choices) != 0 || cs[7].Usage == nil || cs[7].Usage.CompletionTokens != 6 || cs[7].Usage.PromptTokens < 10 {
		t.Fatalf("usage chunk: %s", events[7])
	}
	// Tokens are never early: the last one arrives no sooner than the modelled
	// prefill plus five decode steps (lateness itself is measured by BenchmarkFleet32).
	e := s.Engine()
	p := cs[7].Usage.PromptTokens
	modelled := e.StepTime(p, p)
	for k := 1; k < 6; k++ {
		modelled += e.StepTime(1, p+k)
	}
	if got := at[6].Sub(start); got < modelled {
		t.Fatalf("last token after %v, before its modelled time %v", got, modelled)
	}
}

func TestCompletionStreamNoUsage(t *testing.T) {
	_, ts := newTestServer(t, nil)
	resp, err := http.Post(ts.URL+"/v1/completions", "application/json",
		strings.NewReader(`{"model":"sql-lora","prompt":[1,2,3,4,5],"max_tokens":3,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, _ := sse(t, resp)
	if len(events) != 4 || events[3] != "[DONE]" || strings.Contains(events[0], "usage") ||
		!strings.Contains(events[0], `"object":"text_completion"`) || !strings.Contains(events[2], `"finish_reason":"length"`) {
		t.Fatalf("events: %q", events)
	}
}

func TestErrors(t *testing.T) {
	s, ts := newTestServer(t, func(c *Config) {
		c.Engine.MaxModelLen = 200
		c.Engine.MaxNumSeqs = 1
		c.Engine.MaxWaiting = 1
		c.Faults.LatencyMultiplier = 10 // the background requests outlive the cases
	})
	// Occupy the only running slot, then the only waiting slot.
	for want := 1; want <= 2; want++ {
		go func() {
			resp, err := http.Post(ts.URL+"/v1/completions", "application/json",
				strings.NewReader(`{"model":"`+testModel+`","prompt":"x","max_tokens":150}`))
			if err == nil {
				resp.Body.Close()
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for st := s.Engine().Stats(); st.Running+st.Waiting < want; st = s.Engine().Stats() {
			if time.Now().After(deadline) {
				t.Fatalf("background request %d never queued", want)
			}
			time.Sleep(time.Millisecond)
		}
		for want == 1 && s.Engine().Stats().Running != 1 {
			time.Sleep(time.Millisecond)
		}
	}
	m := `"model":"` + testModel + `"`
	cases := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"not JSON", "/v1/completions", `{"model":`, 400, "invalid JSON"},
		{"wrong type", "/v1/completions", `{` + m + `,"prompt":"hi","max_tokens":"ten"}`, 400, `field "max_tokens": expected int, found JSON string`},
		{"no model", "/v1/completions", `{"prompt":"hi"}`, 400, `expected a model name`},
		{"unknown model", "/v1/completions", `{"model":"gpt-9","prompt":"hi"}`, 404, "The model `gpt-9` does not exist."},
		{"no prompt", "/v1/completions", `{` + m + `}`, 400, `field "prompt": expected`},
		{"bad prompt", "/v1/completions", `{` + m + `,"prompt":{"a":1}}`, 400, `expected a string, a list of one string or a list of token IDs`},
		{"two prompts", "/v1/completions", `{` + m + `,"prompt":["a","b"]}`, 400, `found 2`},
		{"n=2", "/v1/completions", `{` + m + `,"prompt":"hi","n":2}`, 400, `expected 1, found 2`},
		{"stream options without stream", "/v1/completions", `{` + m + `,"prompt":"hi","stream_options":{"include_usage":true}}`, 400, "stream=True"},
		{"zero max tokens", "/v1/completions", `{` + m + `,"prompt":"hi","max_tokens":0}`, 400, "at least 1"},
		{"max tokens overflow", "/v1/completions", `{` + m + `,"prompt":"hi","max_tokens":9223372036854775807}`, 400, "maximum context length is 200 tokens"},
		{"max tokens not an int", "/v1/completions", `{` + m + `,"prompt":"hi","max_tokens":1e30}`, 400, `field "max_tokens": expected int`},
		{"context too long", "/v1/completions", `{` + m + `,"prompt":"hi","max_tokens":199}`, 400, "maximum context length is 200 tokens. However, you requested 201 tokens (2 in the prompt, 199 in the completion)"},
		{"no messages", "/v1/chat/completions", `{` + m + `,"messages":[]}`, 400, `field "messages"`},
		{"bad content part", "/v1/chat/completions", `{` + m + `,"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, `expected type "text"`},
		{"queue full", "/v1/completions", `{` + m + `,"prompt":"hi","max_tokens":1}`, 429, "queue is full"},
		{"no route", "/v2/x", `{}`, 404, "no route"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, b := post(t, ts.URL+c.path, c.body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			var env struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    int    `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(b, &env); err != nil || env.Error.Code != c.status || env.Error.Type == "" {
				t.Fatalf("envelope %s (%v)", b, err)
			}
			if !strings.Contains(env.Error.Message, c.msg) {
				t.Fatalf("message %q, want it to contain %q", env.Error.Message, c.msg)
			}
		})
	}
	if err := s.SetFaults(Faults{ErrorRate: 1}); err != nil {
		t.Fatal(err)
	}
	if resp, b := post(t, ts.URL+"/v1/completions", `{`+m+`,"prompt":"hi","max_tokens":1}`); resp.StatusCode != 500 || !strings.Contains(string(b), "injected") {
		t.Fatalf("injected failure: %d %s", resp.StatusCode, b)
	}
}

func TestModelsAndHealth(t *testing.T) {
	_, ts := newTestServer(t, nil)
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string  `json:"id"`
			Parent *string `json:"parent"`
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != testModel || list.Data[1].ID != "sql-lora" ||
		list.Data[1].Parent == nil || *list.Data[1].Parent != testModel {
		t.Fatalf("models: %+v (%v)", list, err)
	}
	resp, err = http.Get(ts.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
}

// familyShape is a metric family's type and the sorted names of its labels.
func familyShape(mf *dto.MetricFamily) string {
	set := map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			set[l.GetName()] = true
		}
	}
	var names []string
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return mf.GetType().String() + " {" + strings.Join(names, ",") + "}"
}

func parseMetrics(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func TestMetricsMatchVLLMV1(t *testing.T) {
	_, ts := newTestServer(t, nil)
	post(t, ts.URL+"/v1/completions", `{"model":"`+testModel+`","prompt":"hello world","max_tokens":3}`)
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	got := parseMetrics(t, resp.Body)
	resp.Body.Close()

	golden, err := os.Open("../../shared/testdata/vllm-v1-metrics.txt")
	if err != nil {
		t.Skipf("vLLM V1 golden metrics not found beside the repository: %v", err)
	}
	defer golden.Close()
	for name, want := range parseMetrics(t, golden) {
		if strings.HasSuffix(name, "_created") {
			continue // prometheus_client (Python) artefacts, not read by scrapers
		}
		g, ok := got[name]
		if !ok {
			t.Errorf("missing family %s", name)
			continue
		}
		if familyShape(g) != familyShape(want) {
			t.Errorf("%s: shape %s, want %s", name, familyShape(g), familyShape(want))
		}
	}
	value := func(name string) float64 {
		m := got[name].GetMetric()[0]
		if m.Counter != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	pt := float64(len(engine.Tokenize(nil, "hello world")) + 1)
	if value("vllm:generation_tokens_total") != 3 || value("vllm:prompt_tokens_total") != pt || value("vllm:prefix_cache_queries_total") != pt {
		t.Errorf("token counters: generation %v prompt %v queries %v", value("vllm:generation_tokens_total"),
			value("vllm:prompt_tokens_total"), value("vllm:prefix_cache_queries_total"))
	}
	if n := got["vllm:time_to_first_token_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("TTFT count %d, want 1", n)
	}
	for _, name := range []string{"gpu_gfx_activity", "gpu_umc_activity", "gpu_used_vram", "gpu_total_vram", "gpu_free_vram",
		"gpu_power_usage", "gpu_package_power", "gpu_junction_temperature", "gpu_clock"} {
		f, ok := got[name]
		if !ok {
			t.Errorf("missing GPU family %s", name)
			continue
		}
		shape := familyShape(f)
		for _, l := range []string{"gpu_id", "card_model", "hostname", "pod", "namespace", "container"} {
			if !strings.Contains(shape, l) {
				t.Errorf("%s labels %s lack %s", name, shape, l)
			}
		}
	}
	if _, ok := got["gpu_edge_temperature"]; ok {
		t.Error("MI300X has no edge sensor, but gpu_edge_temperature is published")
	}
	if v := got["gpu_total_vram"].GetMetric()[0].GetGauge().GetValue(); v != 192000 {
		t.Errorf("MI300X total VRAM %v MB, want 192000", v)
	}
}

func TestMetricsFaultsAndAdmin(t *testing.T) {
	_, ts := newTestServer(t, nil)
	req, _ := http.NewRequest(http.MethodPut, ts.URL+"/admin/faults", strings.NewReader(`{"metrics_error_rate":1,"metrics_delay_ms":30}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("set faults: %v %v", resp, err)
	}
	resp.Body.Close()
	start := time.Now()
	resp, err = http.Get(ts.URL + "/metrics")
	if err != nil || resp.StatusCode != 500 || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("faulty /metrics: %v %v after %v", resp, err, time.Since(start))
	}
	resp.Body.Close()
	cases := []struct{ body, msg string }{
		{`{"error_rate":2}`, "faults.error_rate: expected a fraction in [0, 1], found 2"},
		{`{"bogus":1}`, `unknown field`},
		{`{"latency_multiplier":-1}`, "latency_multiplier"},
	}
	for _, c := range cases {
		resp, b := post(t, ts.URL+"/admin/faults", c.body)
		if resp.StatusCode != 400 || !strings.Contains(string(b), c.msg) {
			t.Errorf("%s: %d %s, want 400 with %q", c.body, resp.StatusCode, b, c.msg)
		}
	}
}

func TestCrashAndRestart(t *testing.T) {
	s, err := New(Config{Name: "sim-crash", Engine: testEngineConfig(t, "h100")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Addr()
	// A long request is in flight when the server crashes.
	done := make(chan error, 1)
	go func() {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model":"`+testModel+`","prompt":"hi","max_tokens":1000}`))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	for s.Engine().Stats().Running == 0 {
		time.Sleep(time.Millisecond)
	}
	resp, b := post(t, url+"/admin/crash?restart_after=50ms", "")
	if resp.StatusCode != 202 {
		t.Fatalf("crash: %d %s", resp.StatusCode, b)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("in-flight request completed across a crash")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight request hung after the crash")
	}
	// The client sees its connection close before the engine has finished
	// aborting (the HTTP server closes first), so wait for the accounting.
	for wait := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		st := s.Engine().Stats()
		if st.Success["abort"] == 1 && st.UsedBlocks == 0 {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("after crash: aborts %d, used blocks %d; want 1 and 0", st.Success["abort"], st.UsedBlocks)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp, b := post(t, url+"/v1/completions", `{"model":"`+testModel+`","prompt":"hi","max_tokens":2}`); resp.StatusCode != 200 {
		t.Fatalf("after restart: %d %s", resp.StatusCode, b)
	}
}

func TestClientAbortFreesTheRequest(t *testing.T) {
	s, ts := newTestServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions",
		strings.NewReader(`{"model":"`+testModel+`","prompt":"hi","max_tokens":5000,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for s.Engine().Stats().Success["abort"] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("abort not counted: %+v", s.Engine().Stats().Success)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Engine().Stats(); st.Running != 0 || st.UsedBlocks != 0 {
		t.Fatalf("after abort: running %d used blocks %d", st.Running, st.UsedBlocks)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestGPUTelemetryFollowsLoad(t *testing.T) {
	s, ts := newTestServer(t, nil)
	read := func() map[string]float64 {
		resp, err := http.Get(ts.URL + "/gpu/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out := map[string]float64{}
		for name, f := range parseMetrics(t, resp.Body) {
			out[name] = f.GetMetric()[0].GetGauge().GetValue()
		}
		return out
	}
	idle := read()
	if idle["gpu_gfx_activity"] != 0 || idle["gpu_power_usage"] != s.Engine().Config().GPU.IdleWatts {
		t.Fatalf("idle GPU: %v", idle)
	}
	// Keep the engine busy with a long prompt and generation; sample over a window inside it.
	go func() {
		body := `{"model":"` + testModel + `","prompt":` + mustJSON(strings.Repeat("busy words here ", 4000)) + `,"max_tokens":2000}`
		if resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body)); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for s.Engine().Stats().Running == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the load request never started")
		}
		time.Sleep(time.Millisecond)
	}
	read() // starts a window while busy
	time.Sleep(gpuWindow + 50*time.Millisecond)
	busy := read()
	if busy["gpu_gfx_activity"] < 20 || busy["gpu_power_usage"] <= idle["gpu_power_usage"] ||
		busy["gpu_junction_temperature"] <= idle["gpu_junction_temperature"] {
		t.Fatalf("busy GPU %v not above idle %v", busy, idle)
	}
	// VRAM as vLLM reports it: preallocated at start (weights, reserve, the
	// whole KV pool), about gpu_memory_utilization of HBM, flat under load
	// (KV blocks in use do not change it).
	if st := s.Engine().Stats(); st.UsedBlocks == 0 {
		t.Fatal("the load request holds no KV blocks")
	}
	if busy["gpu_used_vram"] != idle["gpu_used_vram"] {
		t.Errorf("used VRAM %v MB under load, %v MB idle: want it flat", busy["gpu_used_vram"], idle["gpu_used_vram"])
	}
	ec := s.Engine().Config()
	weightsMB := ec.Model.WeightBytes() / 1e6
	want := ec.GPUMemoryUtilization * idle["gpu_total_vram"]
	if idle["gpu_used_vram"] < weightsMB || idle["gpu_used_vram"] > want*1.001 || idle["gpu_used_vram"] < want*0.98 ||
		idle["gpu_free_vram"]+idle["gpu_used_vram"] != idle["gpu_total_vram"] {
		t.Fatalf("VRAM: %v (weights %.0f MB), want used ≈ gpu_memory_utilization × total = %.0f MB", idle, weightsMB, want)
	}
}

func TestSGLangMetricNames(t *testing.T) {
	_, ts := newTestServer(t, func(c *Config) { c.MetricsFlavor = "sglang" })
	post(t, ts.URL+"/v1/completions", `{"model":"`+testModel+`","prompt":"hello world","max_tokens":2}`)
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, resp.Body)
	resp.Body.Close()
	want := map[string]string{
		"sglang:num_queue_reqs":          "GAUGE {model_name}",
		"sglang:num_running_reqs":        "GAUGE {model_name}",
		"sglang:token_usage":             "GAUGE {model_name}",
		"sglang:cache_config_info":       "GAUGE {model_name,num_pages,page_size}",
		"sglang:generation_tokens_total": "COUNTER {model_name}",
	}
	for name, shape := range want {
		if f, ok := fams[name]; !ok || familyShape(f) != shape {
			t.Errorf("%s: %v, want %s", name, fams[name], shape)
		}
	}
	if _, ok := fams["vllm:num_requests_running"]; ok {
		t.Error("sglang flavour also publishes vLLM names")
	}
	if _, err := New(Config{Engine: testEngineConfig(t, "mi300x"), MetricsFlavor: "tgi"}); err == nil || !strings.Contains(err.Error(), `expected vllm or sglang, found "tgi"`) {
		t.Errorf("bad flavour error: %v", err)
	}
}

// TestMultiTurnReusesGeneratedBlocks: the text a client receives tokenises
// back to the tokens the engine cached, so a follow-up turn that carries the
// answer hits the cache beyond the first prompt, as with a real server.
func TestMultiTurnReusesGeneratedBlocks(t *testing.T) {
	_, ts := newTestServer(t, nil)
	// No trailing space: "caching. " + " it" would tokenise the double space
	// differently, as real tokenizers also do at such seams.
	first := strings.TrimSpace(strings.Repeat("Tell me about routing and caching. ", 12))
	var a, b completion
	resp, body := post(t, ts.URL+"/v1/completions", `{"model":"`+testModel+`","prompt":`+mustJSON(first)+`,"max_tokens":40}`)
	if resp.StatusCode != 200 || json.Unmarshal(body, &a) != nil {
		t.Fatalf("first turn: %d %s", resp.StatusCode, body)
	}
	second := first + a.Choices[0].Text + " And then?"
	resp, body = post(t, ts.URL+"/v1/completions", `{"model":"`+testModel+`","prompt":`+mustJSON(second)+`,"max_tokens":1}`)
	if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil {
		t.Fatalf("second turn: %d %s", resp.StatusCode, body)
	}
	// Computed KV of turn one: its prompt and all but the last generated token.
	want := (a.Usage.PromptTokens + 40 - 1) / 16 * 16
	if got := b.Usage.PromptTokensDetails.CachedTokens; got != want {
		t.Fatalf("second turn cached %d tokens, want %d (first prompt alone: %d)", got, want, a.Usage.PromptTokens/16*16)
	}
}

func TestInjectedErrorRateIsAShare(t *testing.T) {
	_, ts := newTestServer(t, func(c *Config) { c.Faults.ErrorRate = 0.5 })
	failed := 0
	for range 200 {
		r, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(`{"model":"`+testModel+`","prompt":"hi","max_tokens":1}`))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode == 500 {
			failed++
		}
	}
	if failed < 70 || failed > 130 {
		t.Fatalf("%d of 200 requests failed at error rate 0.5", failed)
	}
}
