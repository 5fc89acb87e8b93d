package simulator

import (
	"strings"
	"testing"

	"github.com/fastepp/fastepp/simulator/engine"
)

// FuzzRequestParsing: no request body makes parsing or tokenising panic.
// `go test` runs the seeds; `go test -fuzz FuzzRequestParsing` explores.
func FuzzRequestParsing(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","prompt":"hello","max_tokens":3}`,
		`{"model":"m","prompt":[1,2,3]}`,
		`{"model":"m","prompt":[[1,2]]}`,
		`{"model":"m","prompt":["a"]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}`,
		`{"model":"m","messages":[{"role":"user","content":null}],"max_completion_tokens":-1}`,
		`{"model":"m","prompt":[-1]}`,
		`{"model":"m","prompt":{"x":1},"n":2}`,
		`[]`, `null`, `{"model":`, "\x00\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, aerr := decodeRequest([]byte(body))
		if aerr != nil {
			if aerr.status != 400 || aerr.message == "" {
				t.Fatalf("error %+v", aerr)
			}
			return
		}
		_, _ = promptTokens(req.Prompt)
		_, _ = chatTokens(req.Messages)
		_ = engine.Tokenize(nil, strings.ToValidUTF8(body, "?"))
		_ = engine.Tokenize(nil, body)
	})
}
