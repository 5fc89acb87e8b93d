package loadgen

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, y string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const srvLine = "server: {base_url: \"http://127.0.0.1:1\", model_name: m}\n"

func TestArrivalSchedules(t *testing.T) {
	cases := []struct {
		name           string
		load           string
		wantN          [2]int // per stage, inclusive range
		wantCV         [2]float64
		stage2FirstMin time.Duration
	}{
		{"constant", "{type: constant, stages: [{rate: 100, duration: 10}, {rate: 10, duration: 2}]}", [2]int{1000, 1000}, [2]float64{0, 0.001}, 10 * time.Second},
		{"poisson", "{type: poisson, stages: [{rate: 100, duration: 10}, {rate: 10, duration: 2}], seed: 3}", [2]int{900, 1100}, [2]float64{0.9, 1.1}, 10 * time.Second},
		{"bursty gamma 0.25", "{type: poisson, burstiness: 0.25, stages: [{rate: 100, duration: 10}, {rate: 10, duration: 2}], seed: 3}", [2]int{800, 1200}, [2]float64{1.7, 2.3}, 10 * time.Second},
		{"smooth gamma 4", "{type: poisson, burstiness: 4, stages: [{rate: 100, duration: 10}, {rate: 10, duration: 2}], seed: 3}", [2]int{950, 1050}, [2]float64{0.4, 0.6}, 10 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, "load: "+tc.load+"\n"+srvLine)
			s := newRateSchedule(c)
			var gaps []float64
			var prev time.Duration
			n := [2]int{}
			first2 := time.Duration(-1)
			for a, ok := s.next(); ok; a, ok = s.next() {
				if a.at < prev {
					t.Fatalf("arrivals out of order: %v after %v", a.at, prev)
				}
				n[a.stage]++
				if a.stage == 0 {
					if n[0] > 1 {
						gaps = append(gaps, (a.at - prev).Seconds())
					}
				} else if first2 < 0 {
					first2 = a.at
				}
				prev = a.at
			}
			if n[0] < tc.wantN[0] || n[0] > tc.wantN[1] {
				t.Errorf("stage 0 sent %d, want %v", n[0], tc.wantN)
			}
			if first2 < tc.stage2FirstMin {
				t.Errorf("stage 1 starts at %v, want >= %v", first2, tc.stage2FirstMin)
			}
			var m, v float64
			for _, g := range gaps {
				m += g
			}
			m /= float64(len(gaps))
			for _, g := range gaps {
				v += (g - m) * (g - m)
			}
			cv := math.Sqrt(v/float64(len(gaps))) / m
			// gamma with shape k has CV 1/sqrt(k).
			if cv < tc.wantCV[0] || cv > tc.wantCV[1] {
				t.Errorf("inter-arrival CV %.3f, want in %v", cv, tc.wantCV)
			}
			// same seed, same plan
			s2 := newRateSchedule(c)
			s3 := newRateSchedule(c)
			for i := 0; i < 50; i++ {
				a, _ := s2.next()
				b, _ := s3.next()
				if a != b {
					t.Fatalf("seeded schedules differ at %d: %v vs %v", i, a, b)
				}
			}
		})
	}
}

func TestSharedPrefixWorkload(t *testing.T) {
	c := mustParse(t, "load: {stages: [{rate: 1, duration: 1}], seed: 5}\napi: {type: chat}\n"+srvLine+
		"data: {type: shared_prefix, shared_prefix: {num_unique_system_prompts: 3, num_users_per_system_prompt: 2, system_prompt_len: 200, question_len: 30, output_len: 17}}\n")
	g, _, err := newGenerator(c)
	if err != nil {
		t.Fatal(err)
	}
	sys := map[string]string{}
	for i := int64(0); i < 200; i++ {
		r := g.next(i)
		if len(r.Messages) != 2 || r.Messages[0].Role != "system" {
			t.Fatalf("want system+user messages, got %+v", r.Messages)
		}
		if n := len(strings.Fields(r.Messages[0].Content)); n != 200 {
			t.Fatalf("system prompt has %d words, want 200", n)
		}
		if n := len(strings.Fields(r.Messages[1].Content)); n != 30 {
			t.Fatalf("question has %d words, want 30", n)
		}
		if r.MaxTokens != 17 || r.InputLen != 230 {
			t.Fatalf("max_tokens %d input %d, want 17 and 230", r.MaxTokens, r.InputLen)
		}
		if s, ok := sys[r.Group]; ok && s != r.Messages[0].Content {
			t.Fatalf("group %s has two different system prompts", r.Group)
		}
		sys[r.Group] = r.Messages[0].Content
	}
	if len(sys) != 3 {
		t.Fatalf("saw %d groups, want 3", len(sys))
	}
	seen := map[string]bool{}
	for _, s := range sys {
		if seen[s[:60]] {
			t.Fatal("two groups share the start of their system prompt")
		}
		seen[s[:60]] = true
	}
	// reproducible
	g2, _, _ := newGenerator(c)
	g3, _, _ := newGenerator(c)
	for i := int64(0); i < 20; i++ {
		a, b := g2.next(i), g3.next(i)
		if a.Messages[1].Content != b.Messages[1].Content || a.Group != b.Group {
			t.Fatal("same seed produced different requests")
		}
	}
}

func TestRandomWorkloadDistribution(t *testing.T) {
	c := mustParse(t, "load: {stages: [{rate: 1, duration: 1}]}\n"+srvLine+
		"data: {type: random, input_distribution: {mean: 300, std_dev: 50, min: 200, max: 350}, output_distribution: {type: uniform, min: 5, max: 9}}\n")
	g, _, _ := newGenerator(c)
	var sum float64
	for i := int64(0); i < 2000; i++ {
		r := g.next(i)
		if r.InputLen < 200 || r.InputLen > 350 || len(strings.Fields(r.Prompt)) != r.InputLen {
			t.Fatalf("input %d (%d words) outside [200,350] or not matching", r.InputLen, len(strings.Fields(r.Prompt)))
		}
		if r.MaxTokens < 5 || r.MaxTokens > 9 {
			t.Fatalf("output %d outside [5,9]", r.MaxTokens)
		}
		sum += float64(r.InputLen)
	}
	if m := sum / 2000; m < 285 || m > 305 {
		t.Errorf("mean input %.1f, want ≈ 295 (normal 300±50 clipped at 350)", m)
	}
}

func TestMultiTurnGrows(t *testing.T) {
	c := mustParse(t, "load: {stages: [{rate: 1, duration: 1}]}\napi: {type: chat}\n"+srvLine+
		"data: {type: multi_turn, multi_turn: {num_conversations: 2, turns: 3, system_prompt_len: 10, input_len: 5, output_len: 7}}\n")
	g, _, _ := newGenerator(c)
	wantMsgs := []int{2, 2, 4, 4, 6, 6, 2, 2}
	var prev0 []Message
	for i := int64(0); i < 8; i++ {
		r := g.next(i)
		if len(r.Messages) != wantMsgs[i] {
			t.Fatalf("request %d has %d messages, want %d", i, len(r.Messages), wantMsgs[i])
		}
		if i%2 == 0 && i < 6 {
			for k, m := range prev0 {
				if r.Messages[k] != m {
					t.Fatalf("turn %d does not extend the previous turn at message %d", i/2, k)
				}
			}
			prev0 = r.Messages
		}
	}
}

func TestTraceReading(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body, wantErr string
	}{
		{"ok", `{"timestamp": 0, "input_len": 10, "output_len": 3, "prefix_group": "a"}
{"timestamp": 0.5, "input_len": 20, "output_len": 4}
`, ""},
		{"bad json", "{timestamp: 0}\n", "line 1"},
		{"unknown field", `{"timestamp": 0, "input_len": 1, "output_len": 1, "prompt": "x"}` + "\n", "line 1"},
		{"decreasing", `{"timestamp": 1, "input_len": 1, "output_len": 1}
{"timestamp": 0.5, "input_len": 1, "output_len": 1}
`, "line 2: timestamp"},
		{"zero output", `{"timestamp": 1, "input_len": 1, "output_len": 0}` + "\n", "output_len"},
		{"empty", "\n", "at least one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".jsonl")
			os.WriteFile(p, []byte(tc.body), 0o644)
			recs, err := ReadTrace(p)
			if tc.wantErr == "" {
				if err != nil || len(recs) != 2 {
					t.Fatalf("got %d records, err %v", len(recs), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
