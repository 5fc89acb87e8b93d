package simulator

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/fastepp/fastepp/simulator/engine"
)

// apiError is an OpenAI error envelope with its HTTP status.
type apiError struct {
	status  int
	typ     string
	message string
	param   string
}

func (e *apiError) Error() string { return e.message }

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "BadRequestError", message: fmt.Sprintf(format, args...), param: param}
}

// writeError writes {"error":{"message","type","param","code"}} as vLLM does.
func writeError(w http.ResponseWriter, e *apiError) {
	var param any
	if e.param != "" {
		param = e.param
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": e.message, "type": e.typ, "param": param, "code": e.status,
	}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

// genRequest is the union of the completion and chat-completion request
// fields the simulator reads; others are accepted and ignored, as vLLM does.
type genRequest struct {
	Model               string          `json:"model"`
	Prompt              json.RawMessage `json:"prompt"`
	Messages            []chatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	IgnoreEOS   bool     `json:"ignore_eos"`
	N           *int     `json:"n"`
	Temperature *float64 `json:"temperature"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// decodeRequest parses body; type mismatches name the field and both types.
func decodeRequest(body []byte) (*genRequest, *apiError) {
	var req genRequest
	if err := json.Unmarshal(body, &req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, badRequest(te.Field, "field %q: expected %s, found JSON %s", te.Field, te.Type, te.Value)
		}
		return nil, badRequest("", "request body: expected a JSON object, found invalid JSON: %v", err)
	}
	if req.Model == "" {
		return nil, badRequest("model", "field \"model\": expected a model name, found none")
	}
	if req.N != nil && *req.N != 1 {
		return nil, badRequest("n", "field \"n\": the simulator generates one choice, expected 1, found %d", *req.N)
	}
	if req.StreamOptions != nil && !req.Stream {
		return nil, badRequest("stream_options", "Stream options can only be defined when `stream=True`.")
	}
	if req.Temperature != nil && *req.Temperature < 0 {
		return nil, badRequest("temperature", "field \"temperature\": expected a number ≥ 0, found %g", *req.Temperature)
	}
	return &req, nil
}

// Special token IDs of the Llama 3 chat template (the top of its vocabulary).
const (
	tokBOS         = 128000
	tokStartHeader = 128006
	tokEndHeader   = 128007
	tokEOT         = 128009
)

// promptTokens tokenises a completion prompt: a string, a list of one string,
// a list of token IDs, or a list of one list of token IDs.
func promptTokens(raw json.RawMessage) ([]uint32, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt", "field \"prompt\": expected a string or a list of token IDs, found none")
	}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		return engine.Tokenize(append(make([]uint32, 0, len(text)/3+2), tokBOS), text), nil
	}
	var texts []string
	if err := json.Unmarshal(raw, &texts); err == nil {
		if len(texts) != 1 {
			return nil, badRequest("prompt", "field \"prompt\": the simulator serves one prompt per request, expected a list of 1 string, found %d", len(texts))
		}
		return engine.Tokenize([]uint32{tokBOS}, texts[0]), nil
	}
	var ids []int64
	if err := json.Unmarshal(raw, &ids); err != nil {
		var nested [][]int64
		if err2 := json.Unmarshal(raw, &nested); err2 != nil || len(nested) != 1 {
			return nil, badRequest("prompt", "field \"prompt\": expected a string, a list of one string or a list of token IDs, found %.40s", raw)
		}
		ids = nested[0]
	}
	out := make([]uint32, len(ids))
	for i, id := range ids {
		if id < 0 || id >= 1<<31 {
			return nil, badRequest("prompt", "field \"prompt\": token ID %d at index %d out of range [0, 2^31)", id, i)
		}
		out[i] = uint32(id)
	}
	return out, nil
}

// chatTokens renders messages through a Llama-3-style chat template and
// tokenises them; the template's markers are one token each.
func chatTokens(msgs []chatMessage) ([]uint32, *apiError) {
	if len(msgs) == 0 {
		return nil, badRequest("messages", "field \"messages\": expected a non-empty list of {role, content}, found none")
	}
	toks := []uint32{tokBOS}
	for i, m := range msgs {
		if m.Role == "" {
			return nil, badRequest("messages", "messages[%d].role: expected a role (system, user, assistant, tool), found none", i)
		}
		toks = append(toks, tokStartHeader)
		toks = engine.Tokenize(toks, m.Role)
		toks = append(toks, tokEndHeader)
		text, err := messageText(m.Content)
		if err != nil {
			return nil, badRequest("messages", "messages[%d].content: %v", i, err)
		}
		toks = engine.Tokenize(toks, "\n\n"+text)
		toks = append(toks, tokEOT)
	}
	toks = append(toks, tokStartHeader)
	toks = engine.Tokenize(toks, "assistant")
	toks = append(toks, tokEndHeader)
	return engine.Tokenize(toks, "\n\n"), nil
}

// messageText accepts a string, null, or a list of {type:"text", text} parts.
func messageText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("expected a string or a list of {type, text} parts, found %.40s", raw)
	}
	var out []byte
	for j, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("part %d: expected type \"text\", found %q", j, p.Type)
		}
		out = append(out, p.Text...)
	}
	return string(out), nil
}

// appendUsage appends the OpenAI usage object with vLLM's prompt_tokens_details.
func appendUsage(b []byte, prompt, completion, cached int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":`...)
	b = strconv.AppendInt(b, int64(cached), 10)
	return append(b, `}}`...)
}
