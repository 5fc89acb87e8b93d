package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Result is what one request measured. Durations are zero when not observed.
type Result struct {
	Index        int64
	Stage        int
	Group        string
	Planned      time.Duration // planned send, offset from the run start
	SchedDelay   time.Duration // actual send − planned send
	Sent         time.Time
	TTFT         time.Duration
	E2E          time.Duration
	ITLs         []time.Duration // gaps between content chunks (reused; do not keep)
	InputTokens  int
	OutputTokens int
	Estimated    bool // token counts estimated: the server sent no usage
	Chunks       int  // content chunks received
	Status       int  // HTTP status, 0 if none
	ErrKind      string
	ErrMsg       string
}

// OK reports whether the request completed.
func (r *Result) OK() bool { return r.ErrKind == "" }

// TPOT is (e2e − TTFT)/(output tokens − 1); ok is false when undefined.
func (r *Result) TPOT() (time.Duration, bool) {
	if !r.OK() || r.OutputTokens < 2 || r.TTFT <= 0 {
		return 0, false
	}
	return (r.E2E - r.TTFT) / time.Duration(r.OutputTokens-1), true
}

// NTPOT is e2e / output tokens; ok is false when undefined.
func (r *Result) NTPOT() (time.Duration, bool) {
	if !r.OK() || r.OutputTokens < 1 {
		return 0, false
	}
	return r.E2E / time.Duration(r.OutputTokens), true
}

// Client sends OpenAI completions or chat requests and times the stream.
type Client struct {
	HTTP      *http.Client
	URL       string
	Model     string
	Chat      bool
	Stream    bool
	IgnoreEOS bool
	Headers   map[string]string
	APIKey    string
	Timeout   time.Duration

	raw *rawHTTP // plain-http fast path; nil = net/http
}

// header returns the request headers (a fresh map).
func (c *Client) header() http.Header {
	h := http.Header{"Content-Type": {"application/json"}}
	if c.Stream {
		h.Set("Accept", "text/event-stream")
	}
	if c.APIKey != "" {
		h.Set("Authorization", "Bearer "+c.APIKey)
	}
	for k, v := range c.Headers {
		h.Set(k, v)
	}
	return h
}

// CloseIdleConnections closes kept-alive connections.
func (c *Client) CloseIdleConnections() {
	if c.raw != nil {
		c.raw.closeIdle()
	}
	c.HTTP.CloseIdleConnections()
}

// NewClient builds a client for cfg with a connection pool sized for open
// loop load (no cap on connections per host).
func NewClient(cfg *Config) *Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
	base := strings.TrimRight(cfg.Server.BaseURL, "/")
	path := "/v1/completions"
	if cfg.API.Type == APIChat {
		path = "/v1/chat/completions"
	}
	if strings.HasSuffix(base, "/v1") {
		base = strings.TrimSuffix(base, "/v1")
	}
	c := &Client{HTTP: &http.Client{Transport: tr}, URL: base + path, Model: cfg.Server.ModelName,
		Chat: cfg.API.Type == APIChat, Stream: cfg.API.StreamingOn(), IgnoreEOS: cfg.Server.IgnoreEOS,
		Headers: cfg.API.Headers, APIKey: cfg.Server.APIKey, Timeout: time.Duration(cfg.Load.RequestTimeout)}
	if u, err := url.Parse(c.URL); err == nil && u.Scheme == "http" && u.User == nil {
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "80")
		}
		p := u.EscapedPath()
		if u.RawQuery != "" {
			p += "?" + u.RawQuery
		}
		c.raw = newRawHTTP(addr, u.Host, p, c.header())
	}
	return c
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type body struct {
	Model         string         `json:"model"`
	Prompt        *string        `json:"prompt,omitempty"`
	Messages      []Message      `json:"messages,omitempty"`
	MaxTokens     int            `json:"max_tokens"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
	IgnoreEOS     bool           `json:"ignore_eos,omitempty"`
}

var usageOn = &streamOptions{IncludeUsage: true}

// Encode returns the JSON body for req.
func (c *Client) Encode(req *Request) ([]byte, error) {
	b := body{Model: c.Model, MaxTokens: req.MaxTokens, Stream: c.Stream, IgnoreEOS: c.IgnoreEOS}
	if c.Stream {
		b.StreamOptions = usageOn
	}
	if c.Chat {
		b.Messages = req.Messages
		if b.Messages == nil {
			b.Messages = []Message{{Role: "user", Content: req.Prompt}}
		}
	} else {
		p := req.Prompt
		b.Prompt = &p
	}
	return json.Marshal(&b)
}

type chunk struct {
	Object  string `json:"object"`
	Message string `json:"message"`
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
			Reasoning        string `json:"reasoning"`
		} `json:"delta"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// Do sends req and fills res (whose Sent, Planned and SchedDelay the caller
// sets). It never panics on a bad server: every failure becomes ErrKind.
func (c *Client) Do(ctx context.Context, req *Request, res *Result) {
	res.Index, res.Stage, res.Group, res.InputTokens = req.Index, req.Stage, req.Group, req.InputLen
	payload, err := c.Encode(req)
	if err != nil {
		res.fail("encode_error", 0, err.Error())
		return
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	var hr *http.Request
	if c.raw == nil {
		hr, err = http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(payload))
		if err != nil {
			res.fail("request_error", 0, err.Error())
			return
		}
		hr.Header = c.header()
	}
	sent := res.Sent
	var resp *http.Response
	if c.raw != nil {
		var pc *pconn
		var stop func() bool
		resp, pc, stop, err = c.raw.roundTrip(ctx, payload)
		if err == nil {
			defer func() { c.raw.finish(resp, pc, stop, res.OK()) }()
		}
	} else {
		resp, err = c.HTTP.Do(hr)
	}
	if err != nil {
		res.E2E = time.Since(sent)
		res.fail(classify(ctx, err), 0, err.Error())
		return
	}
	if c.raw == nil {
		defer resp.Body.Close()
	}
	res.Status = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		res.E2E = time.Since(sent)
		res.fail(fmt.Sprintf("http_%d", resp.StatusCode), resp.StatusCode, strings.TrimSpace(string(msg)))
		return
	}
	if c.Stream {
		c.readStream(ctx, resp.Body, res)
	} else {
		c.readWhole(ctx, resp.Body, res)
	}
}

func (r *Result) fail(kind string, status int, msg string) {
	r.ErrKind, r.ErrMsg = kind, trunc(msg, 200)
	if status != 0 {
		r.Status = status
	}
}

func classify(ctx context.Context, err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "disconnected"
	}
	return "connection_error"
}

var (
	dataPrefix = []byte("data:")
	doneMarker = []byte("[DONE]")
)

func (c *Client) readStream(ctx context.Context, rd io.Reader, res *Result) {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(rd)
	defer func() { br.Reset(nil); readerPool.Put(br) }()
	var last time.Time
	done, finished := false, false
	var ck chunk
	for !done {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A very long event: gather it whole.
			buf := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				buf = append(buf, line...)
			}
			line = buf
		}
		if len(line) > 0 {
			now := time.Now()
			t := bytes.TrimSpace(line)
			if bytes.HasPrefix(t, dataPrefix) {
				d := bytes.TrimSpace(t[len(dataPrefix):])
				if bytes.Equal(d, doneMarker) {
					done = true
					continue
				}
				ck = chunk{}
				if jerr := json.Unmarshal(d, &ck); jerr != nil {
					res.E2E = now.Sub(res.Sent)
					res.fail("bad_stream_event", 0, "expected a JSON chunk after data:, found "+trunc(string(d), 80))
					return
				}
				if len(ck.Error) > 0 && string(ck.Error) != "null" || ck.Object == "error" {
					res.E2E = now.Sub(res.Sent)
					m := string(ck.Error)
					if m == "" {
						m = ck.Message
					}
					res.fail("stream_error", 0, m)
					return
				}
				content := false
				for i := range ck.Choices {
					ch := &ck.Choices[i]
					if ch.Text != "" || ch.Delta.Content != "" || ch.Delta.ReasoningContent != "" || ch.Delta.Reasoning != "" {
						content = true
					}
					if ch.FinishReason != nil && *ch.FinishReason != "" {
						finished = true
					}
				}
				if content {
					if res.Chunks == 0 {
						res.TTFT = now.Sub(res.Sent)
					} else {
						res.ITLs = append(res.ITLs, now.Sub(last))
					}
					last = now
					res.Chunks++
				}
				if ck.Usage != nil {
					res.InputTokens = ck.Usage.PromptTokens
					res.OutputTokens = ck.Usage.CompletionTokens
					res.Estimated = false
					finished = true
				}
			}
		}
		if err != nil {
			res.E2E = time.Since(res.Sent)
			if err == io.EOF && (finished || res.Chunks > 0 && done) {
				break
			}
			if err == io.EOF {
				res.fail("stream_truncated", 0, "stream ended before [DONE] or a finish_reason")
			} else {
				res.fail(classify(ctx, err), 0, err.Error())
			}
			return
		}
	}
	res.E2E = time.Since(res.Sent)
	if res.Chunks == 0 {
		res.fail("empty_response", 0, "stream finished without any content token")
		return
	}
	if res.OutputTokens == 0 {
		// no usage: each content chunk carries about one token.
		res.OutputTokens = res.Chunks
		res.Estimated = true
	}
}

func (c *Client) readWhole(ctx context.Context, rd io.Reader, res *Result) {
	b, err := io.ReadAll(io.LimitReader(rd, 256<<20))
	res.E2E = time.Since(res.Sent)
	if err != nil {
		res.fail(classify(ctx, err), 0, err.Error())
		return
	}
	var ck chunk
	if err := json.Unmarshal(b, &ck); err != nil {
		res.fail("bad_response", 0, "expected a JSON completion, found "+trunc(string(b), 80))
		return
	}
	if len(ck.Error) > 0 && string(ck.Error) != "null" || ck.Object == "error" {
		res.fail("response_error", 0, string(ck.Error)+ck.Message)
		return
	}
	if ck.Usage != nil {
		res.InputTokens, res.OutputTokens = ck.Usage.PromptTokens, ck.Usage.CompletionTokens
		return
	}
	words := 0
	for _, ch := range ck.Choices {
		words += len(strings.Fields(ch.Text)) + len(strings.Fields(ch.Message.Content))
	}
	res.OutputTokens, res.Estimated = words, true
}
