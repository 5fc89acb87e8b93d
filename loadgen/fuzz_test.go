package loadgen

import "testing"

// FuzzParseConfig checks that no input makes config parsing panic; `go test`
// runs the seeds, `go test -fuzz FuzzParseConfig` explores.
func FuzzParseConfig(f *testing.F) {
	f.Add(base)
	f.Add("load: {type: concurrent, stages: [{concurrency_level: 4, num_requests: 100}]}\n" + srvLine)
	f.Add("load: {stages: [{rate: .nan, duration: 1e300}]}\n" + srvLine)
	f.Add("data: {type: shared_prefix, shared_prefix: {system_prompt_len: {type: lognormal, mean: 0}}}\n" + srvLine)
	f.Add("data: {type: multi_turn, multi_turn: {turns: {mean: 99999999}}}\n" + srvLine)
	f.Add("slo: {ttft: -1s}\n")
	f.Add("- 1\n- 2\n")
	f.Add("load: &a {stages: *a}\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseConfig([]byte(s))
	})
}
