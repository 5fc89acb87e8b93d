package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// script says how the fake server answers.
type script struct {
	ttft, itl  time.Duration
	noUsage    bool
	status     int   // non-200: answer with this status
	failEvery  int64 // every Nth request answers 503 (0 = never)
	cutAfter   int   // close the connection after this many tokens (0 = never)
	cutEvery   int64 // apply cutAfter to every Nth request only (0 = all)
	maxTokens  int   // cap on tokens sent (0 = max_tokens of the request)
	serverSide func(n int64)
	// connState, when set, is installed as the server's ConnState hook
	// before it starts (setting it afterwards races with the server).
	connState func(net.Conn, http.ConnState)
}

// waitPrecise sleeps until t, spinning the last stretch so scripted timings
// are exact to tens of microseconds.
func waitPrecise(t time.Time) {
	if d := time.Until(t) - 2*time.Millisecond; d > 0 {
		time.Sleep(d)
	}
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

// newScriptedServer starts an OpenAI-like SSE server on 127.0.0.1.
func newScriptedServer(t testing.TB, s script) (*httptest.Server, *atomic.Int64) {
	return startScripted(t, s, false)
}

// newTLSScripted is newScriptedServer over https (6 tokens, 1 ms apart).
func newTLSScripted(t testing.TB) *httptest.Server {
	srv, _ := startScripted(t, script{ttft: time.Millisecond, itl: time.Millisecond}, true)
	return srv
}

func startScripted(t testing.TB, s script, useTLS bool) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		k := n.Add(1)
		var req struct {
			MaxTokens     int  `json:"max_tokens"`
			Stream        bool `json:"stream"`
			StreamOptions *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
			Messages []Message `json:"messages"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req); err != nil {
			http.Error(w, "bad json", 400)
			return
		}
		if s.status != 0 && s.status != 200 {
			http.Error(w, `{"error":"scripted"}`, s.status)
			return
		}
		if s.failEvery > 0 && k%s.failEvery == 0 {
			http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
			return
		}
		chat := strings.Contains(r.URL.Path, "chat")
		tokens := req.MaxTokens
		if s.maxTokens > 0 && tokens > s.maxTokens {
			tokens = s.maxTokens
		}
		if !req.Stream {
			waitPrecise(start.Add(s.ttft + time.Duration(tokens-1)*s.itl))
			fmt.Fprintf(w, `{"choices":[{"text":"%s"}],"usage":{"prompt_tokens":10,"completion_tokens":%d}}`, strings.Repeat("x ", tokens), tokens)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		cut := s.cutAfter > 0 && (s.cutEvery == 0 || k%s.cutEvery == 0)
		for i := 0; i < tokens; i++ {
			waitPrecise(start.Add(s.ttft + time.Duration(i)*s.itl))
			if cut && i == s.cutAfter {
				hj, ok := w.(http.Hijacker)
				if ok {
					c, _, _ := hj.Hijack()
					c.Close()
				}
				return
			}
			fin := "null"
			if i == tokens-1 {
				fin = `"length"`
			}
			if chat {
				fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":%s}]}\n\n", fin)
			} else {
				fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"text\":\"tok \",\"finish_reason\":%s}]}\n\n", fin)
			}
			fl.Flush()
		}
		if !s.noUsage && req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":%d}}\n\n", tokens)
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		fl.Flush()
	}))
	srv.Listener.Close()
	srv.Listener = l
	if s.connState != nil {
		srv.Config.ConnState = s.connState
	}
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, &n
}

func testConfig(url string, extra string) *Config {
	y := fmt.Sprintf(`
load: {type: constant, stages: [{rate: 40, duration: 0.5}], seed: 7}
api: {type: completion, streaming: true}
server: {base_url: %s, model_name: m, ignore_eos: true}
data: {type: random, input_distribution: {mean: 20, std_dev: 0, min: 20, max: 20}, output_distribution: {mean: 6, std_dev: 0, min: 6, max: 6}}
%s`, url, extra)
	c, err := ParseConfig([]byte(y))
	if err != nil {
		panic(err)
	}
	return c
}
