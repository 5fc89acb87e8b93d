package scorers

import "github.com/fastepp/fastepp/scheduler"

// Interface guard: what config checks at load time, checked at compile time.
var _ Passive = (*openAIParser)(nil)

// OpenAIParserType is GIE's default request parser (OpenAI completions, chat
// completions, responses, conversations and embeddings bodies, and their
// usage in responses). fastepp's ext_proc server reads OpenAI bodies in one
// pass itself (model, prompt spans, stream, cache_salt; usage in responses),
// so the type is accepted and does nothing; the config's parser section may
// name it. It takes no parameters, as in GIE.
//
// GIE's other parsers are refused by config: passthrough-parser (fastepp
// always scans the body as JSON and answers 400 to one that is not) and
// vllmgrpc-parser (fastepp does not read vLLM's gRPC payloads).
const OpenAIParserType = "openai-parser"

type openAIParser struct{ base }

// Role implements Passive.
func (*openAIParser) Role() string { return RoleParser }

func registerParsers(r *scheduler.Registry) {
	r.MustRegister(OpenAIParserType, scheduler.Factory{
		Kind:  scheduler.KindRequestControl,
		Proto: (*openAIParser)(nil),
		Doc:   "accepted for GIE compatibility: fastepp's ext_proc server reads OpenAI request bodies itself",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &openAIParser{newBase(OpenAIParserType, name)}, nil
		},
	})
}
