package extproc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// scanItems renders what the scanner found as comparable values: decoded
// prompt strings, "#" for a run of token ids, "#arr" for a token-id array.
func scanItems(body []byte, info *bodyInfo, a api) []string {
	var out []string
	for _, sp := range info.promptSpans(a) {
		switch {
		case sp.Start > 0 && body[sp.Start-1] == '"':
			var s string
			if err := json.Unmarshal(body[sp.Start-1:sp.End+1], &s); err != nil {
				out = append(out, "!undecodable:"+err.Error())
			} else {
				out = append(out, s)
			}
		case body[sp.Start] == '[':
			out = append(out, "#arr")
		default:
			if len(out) > 0 && out[len(out)-1] == "#" {
				out = append(out, "!split-run")
			}
			out = append(out, "#")
		}
	}
	return out
}

func TestAPIOf(t *testing.T) {
	for _, tc := range []struct {
		path string
		want api
	}{
		{"/v1/completions", apiCompletions},
		{"/v1/chat/completions", apiChat},
		{"/v1/chat/completions?x=1", apiChat},
		{"/openai/v1/chat/completions/", apiChat},
		{"/v1/responses", apiResponses},
		{"/v1/embeddings", apiEmbeddings},
		{"/v1/models", apiUnknown},
		{"", apiUnknown},
	} {
		if got := apiOf(tc.path); got != tc.want {
			t.Errorf("apiOf(%q) = %d, want %d", tc.path, got, tc.want)
		}
	}
}

func TestScanBody(t *testing.T) {
	for _, tc := range []struct {
		name   string
		api    api
		body   string
		err    string // substring of the error; "" = no error
		model  string
		stream bool
		usage  bool
		salt   string
		items  []string
	}{
		{name: "completions string", api: apiCompletions, body: `{"model":"m","prompt":"hello"}`, model: "m", items: []string{"hello"}},
		{name: "completions list", api: apiCompletions, body: ` { "prompt" : ["a", "b\n"], "model" : "m2" , "stream":true}`, model: "m2", stream: true, items: []string{"a", "b\n"}},
		{name: "completions tokens", api: apiCompletions, body: `{"model":"m","prompt":[1,2,3]}`, model: "m", items: []string{"#"}},
		{name: "completions token lists", api: apiCompletions, body: `{"model":"m","prompt":[[1,2],[3]]}`, model: "m", items: []string{"#arr", "#arr"}},
		{name: "completions null prompt", api: apiCompletions, body: `{"model":"m","prompt":null}`, model: "m"},
		{name: "chat", api: apiChat, body: `{"model":"llama","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]}],"stream":true,"stream_options":{"include_usage":true}}`,
			model: "llama", stream: true, usage: true, items: []string{"be brief", "hi"}},
		{name: "chat null content", api: apiChat, body: `{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[]}]}`, model: "m"},
		{name: "chat duplicate content", api: apiChat, body: `{"model":"m","messages":[{"content":"a","content":"b"}]}`, model: "m", items: []string{"b"}},
		{name: "responses input", api: apiResponses, body: `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"q"}]},"s"]}`, model: "m", items: []string{"q", "s"}},
		{name: "embeddings", api: apiEmbeddings, body: `{"model":"e","input":["x","y"]}`, model: "e", items: []string{"x", "y"}},
		{name: "unknown path prefers messages", api: apiUnknown, body: `{"model":"m","prompt":"p","messages":[{"content":"c"}]}`, model: "m", items: []string{"c"}},
		{name: "irrelevant field not checked", api: apiChat, body: `{"model":"m","prompt":5,"messages":[]}`, model: "m"},
		{name: "escaped model", api: apiCompletions, body: `{"model":"a\u00e9\"b","prompt":"x"}`, model: "aé\"b", items: []string{"x"}},
		{name: "escaped key", api: apiCompletions, body: `{"mod\u0065l":"m","prompt":"x"}`, model: "m", items: []string{"x"}},
		{name: "cache salt", api: apiCompletions, body: `{"model":"m","cache_salt":"s1","prompt":"x"}`, model: "m", salt: "s1", items: []string{"x"}},
		{name: "duplicate model last wins", api: apiCompletions, body: `{"model":1,"model":"b"}`, model: "b"},

		{name: "empty", api: apiCompletions, body: ``, err: "found an empty body"},
		{name: "not json", api: apiCompletions, body: `model=x`, err: "not valid JSON"},
		{name: "truncated", api: apiCompletions, body: `{"model":"m","prompt":"abc`, err: "not valid JSON"},
		{name: "trailing garbage", api: apiCompletions, body: `{"model":"m"} x`, err: "not valid JSON"},
		{name: "trailing comma", api: apiCompletions, body: `{"model":"m",}`, err: "not valid JSON"},
		{name: "control char", api: apiCompletions, body: "{\"model\":\"m\x01\"}", err: "not valid JSON"},
		{name: "bad escape", api: apiCompletions, body: `{"model":"\q"}`, err: "not valid JSON"},
		{name: "array top", api: apiCompletions, body: `[1,2]`, err: "expected a JSON object, found an array"},
		{name: "no model", api: apiCompletions, body: `{"prompt":"x"}`, err: `expected a "model" field`},
		{name: "model not string", api: apiCompletions, body: `{"model":7,"prompt":"x"}`, err: `expected "model" to be a string, found a number`},
		{name: "prompt wrong type", api: apiCompletions, body: `{"model":"m","prompt":{"a":1}}`, err: `expected "prompt" to be a string or an array, found an object`},
		{name: "prompt item wrong type", api: apiCompletions, body: `{"model":"m","prompt":[true]}`, err: `"prompt" items`},
		{name: "messages not array", api: apiChat, body: `{"model":"m","messages":"hi"}`, err: `expected "messages" to be an array`},
		{name: "message not object", api: apiChat, body: `{"model":"m","messages":["hi"]}`, err: `"messages" items to be objects`},
		{name: "content wrong type", api: apiChat, body: `{"model":"m","messages":[{"content":3}]}`, err: `message "content"`},
		{name: "input wrong type", api: apiEmbeddings, body: `{"model":"m","input":3}`, err: `expected "input" to be a string or an array`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s scanner
			var info bodyInfo
			body := []byte(tc.body)
			err := s.scanBody(body, tc.api, &info)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("scanBody(%s) error = %v, want one containing %q", tc.body, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("scanBody(%s): %v", tc.body, err)
			}
			var model string
			if err := json.Unmarshal(body[info.modelTok.Start:info.modelTok.End], &model); err != nil || model != tc.model {
				t.Errorf("model = %q (%v), want %q", model, err, tc.model)
			}
			if info.stream != tc.stream || info.includeUsage != tc.usage {
				t.Errorf("stream, include_usage = %v, %v; want %v, %v", info.stream, info.includeUsage, tc.stream, tc.usage)
			}
			salt := ""
			if info.hasCacheSalt {
				salt = string(body[info.cacheSalt.Start:info.cacheSalt.End])
			}
			if salt != tc.salt {
				t.Errorf("cache_salt = %q, want %q", salt, tc.salt)
			}
			if got := scanItems(body, &info, tc.api); fmt.Sprint(got) != fmt.Sprint(tc.items) {
				t.Errorf("prompt items = %q, want %q", got, tc.items)
			}
		})
	}
}

func TestScanDepthLimit(t *testing.T) {
	for _, n := range []int{9999, 10000, 10001} {
		body := []byte(`{"model":"m","x":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`)
		var s scanner
		var info bodyInfo
		err := s.scanBody(body, apiCompletions, &info)
		if valid := json.Valid(body); (err == nil) != valid {
			t.Errorf("depth %d: scanBody error %v, json.Valid %v", n, err, valid)
		}
	}
}

// oracle computes with encoding/json what scanBody must find.
type oracleResult struct {
	syntax   bool // not valid JSON
	fieldErr bool
	model    string
	stream   bool
	usage    bool
	salt     *string
	items    []string
}

func oracle(body []byte, a api) oracleResult {
	if !json.Valid(body) {
		return oracleResult{syntax: true}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return oracleResult{syntax: true}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return oracleResult{fieldErr: true}
	}
	var r oracleResult
	model, ok := obj["model"].(string)
	if !ok {
		return oracleResult{fieldErr: true}
	}
	r.model = model
	r.stream = obj["stream"] == true
	if so, ok := obj["stream_options"].(map[string]any); ok {
		r.usage = so["include_usage"] == true
	}
	if s, ok := obj["cache_salt"].(string); ok {
		r.salt = &s
	}
	var items [numPromptFields][]string
	var present [numPromptFields]bool
	for f, name := range promptFieldNames {
		if !relevant(a, f) {
			continue
		}
		val, has := obj[name]
		if !has || val == nil {
			continue
		}
		present[f] = true
		var bad bool
		if f == fMessages {
			items[f], bad = oracleMessages(val)
		} else {
			items[f], bad = oraclePrompt(val, f == fInput)
		}
		if bad {
			r.fieldErr = true
		}
	}
	switch a {
	case apiChat:
		r.items = items[fMessages]
	case apiCompletions:
		r.items = items[fPrompt]
	case apiResponses, apiEmbeddings:
		r.items = items[fInput]
	default:
		for f := range items {
			if present[f] {
				r.items = items[f]
				break
			}
		}
	}
	return r
}

func oraclePrompt(v any, input bool) (items []string, bad bool) {
	switch x := v.(type) {
	case string:
		return []string{x}, false
	case []any:
		for _, e := range x {
			switch y := e.(type) {
			case string:
				items = append(items, y)
			case json.Number:
				if len(items) == 0 || items[len(items)-1] != "#" {
					items = append(items, "#")
				}
			case []any:
				for _, n := range y {
					if _, ok := n.(json.Number); !ok {
						bad = true
					}
				}
				items = append(items, "#arr")
			case map[string]any:
				if !input {
					bad = true
					continue
				}
				it, b := oracleMessage(y)
				items = append(items, it...)
				bad = bad || b
			default:
				bad = true
			}
		}
		return items, bad
	}
	return nil, true
}

func oracleMessages(v any) (items []string, bad bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, true
	}
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			bad = true
			continue
		}
		it, b := oracleMessage(m)
		items = append(items, it...)
		bad = bad || b
	}
	return items, bad
}

func oracleMessage(m map[string]any) (items []string, bad bool) {
	switch c := m["content"].(type) {
	case nil:
	case string:
		items = append(items, c)
	case []any:
		for _, p := range c {
			pm, ok := p.(map[string]any)
			if !ok {
				bad = true
				continue
			}
			if s, ok := pm["text"].(string); ok {
				items = append(items, s)
			}
		}
	default:
		bad = true
	}
	return items, bad
}

func FuzzScanBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"hello"}`,
		`{"model":"m","prompt":["a","b"],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","prompt":[1,2,[3,4]]}`,
		`{"model":"llama","messages":[{"role":"user","content":[{"type":"text","text":"hi\u00e9"}]}]}`,
		`{"model":"m","input":[{"content":"x"},"y",[1]],"cache_salt":"s"}`,
		`{"mod\u0065l":"m","messages":[{"content":"a","content":null}]}`,
		`[1,2,{"a":[true,false,null,-0.5e+3]}]`,
		`{"model":"m","x":{"y":[{"z":"\"\\\/\b\f\n\r\t"}]}}`,
		` {"model" : "m" , "prompt" : "p" } `,
		`{"model":"m","prompt":"abc`,
	} {
		for a := range api(5) {
			f.Add([]byte(s), uint8(a))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, sel uint8) {
		a := api(sel % 5)
		var s scanner
		var info bodyInfo
		err := s.scanBody(body, a, &info)
		want := oracle(body, a)
		if want.syntax {
			var be *bodyError
			if err == nil || !errors.As(err, &be) || !be.syntax {
				t.Fatalf("body %q is not valid JSON, scanBody error = %v", body, err)
			}
			return
		}
		if err != nil {
			if be := err.(*bodyError); be.syntax {
				t.Fatalf("body %q is valid JSON, scanBody says %v", body, err)
			}
			if !want.fieldErr {
				t.Fatalf("body %q (api %d): scanBody error %v, encoding/json finds the fields fine", body, a, err)
			}
			return
		}
		if want.fieldErr {
			t.Fatalf("body %q (api %d): scanBody accepted it, encoding/json finds a field of the wrong type", body, a)
		}
		var model string
		if err := json.Unmarshal(body[info.modelTok.Start:info.modelTok.End], &model); err != nil || model != want.model {
			t.Fatalf("body %q: model %q (%v), want %q", body, model, err, want.model)
		}
		if info.stream != want.stream || info.includeUsage != want.usage {
			t.Fatalf("body %q: stream, include_usage = %v, %v; want %v, %v", body, info.stream, info.includeUsage, want.stream, want.usage)
		}
		if info.hasCacheSalt != (want.salt != nil) {
			t.Fatalf("body %q: has cache_salt %v, want %v", body, info.hasCacheSalt, want.salt != nil)
		}
		if want.salt != nil {
			var salt string
			if err := json.Unmarshal(body[info.cacheSalt.Start-1:info.cacheSalt.End+1], &salt); err != nil || salt != *want.salt {
				t.Fatalf("body %q: cache_salt %q, want %q", body, salt, *want.salt)
			}
		}
		if got := scanItems(body, &info, a); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want.items) {
			t.Fatalf("body %q (api %d): prompt items %q, want %q", body, a, got, want.items)
		}
	})
}

func BenchmarkScanBody(b *testing.B) {
	for _, size := range []int{2 << 10, 220 << 10} {
		body := benchBodies(1, size)[0]
		b.Run(fmt.Sprintf("chat/%dKB", size>>10), func(b *testing.B) {
			var s scanner
			var info bodyInfo
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for range b.N {
				if err := s.scanBody(body, apiChat, &info); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestScanStringPositions puts each kind of special byte at every position of
// strings around the 8- and 32-byte fast paths and compares with encoding/json.
func TestScanStringPositions(t *testing.T) {
	specials := []string{`\"`, `\\`, `\n`, `\u00e9`, "\x01", "\x1f", "\x7f", "é", `"`, `\`, `\x`, `\u12`}
	for n := 0; n <= 80; n++ {
		for pos := 0; pos <= n; pos++ {
			for _, sp := range specials {
				prompt := strings.Repeat("a", pos) + sp + strings.Repeat("b", n-pos)
				body := []byte(`{"model":"m","prompt":"` + prompt + `"}`)
				var s scanner
				var info bodyInfo
				err := s.scanBody(body, apiCompletions, &info)
				if valid := json.Valid(body); valid != (err == nil) {
					t.Fatalf("%q: json.Valid %v, scanBody error %v", body, valid, err)
				}
				if err != nil {
					continue
				}
				var want struct{ Prompt string }
				json.Unmarshal(body, &want)
				if got := scanItems(body, &info, apiCompletions); len(got) != 1 || got[0] != want.Prompt {
					t.Fatalf("%q: prompt %q, want %q", body, got, want.Prompt)
				}
			}
		}
	}
}
