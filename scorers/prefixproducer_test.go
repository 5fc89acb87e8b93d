package scorers

import (
	"strings"
	"testing"

	"github.com/fastepp/fastepp/scheduler"
)

// TestPrefixParams: the parameters prefix-cache-scorer and
// approx-prefix-cache-producer share, read as GIE reads them.
func TestPrefixParams(t *testing.T) {
	cases := []struct {
		name      string
		p         scheduler.MapParams
		blockTok  int
		maxBlocks int
		note      string // substring of the one note; "" for none
		err       string // substring of the error; "" for none
	}{
		{"defaults", nil, 16, 256, "", ""},
		{"token bound", scheduler.MapParams{"maxPrefixTokensToMatch": 1000}, 16, 62, "", ""},
		{"token bound beats blocks", scheduler.MapParams{"maxPrefixTokensToMatch": 64, "maxPrefixBlocksToMatch": 100, "blockSizeTokens": 32}, 32, 2, "", ""},
		{"token bound of one block", scheduler.MapParams{"maxPrefixTokensToMatch": 16}, 16, 1, "", ""},
		{"token bound under a block", scheduler.MapParams{"maxPrefixTokensToMatch": 15}, 0, 0, "", "maxPrefixTokensToMatch: expected 0 (use maxPrefixBlocksToMatch) or at least one block of blockSizeTokens = 16 tokens, found 15"},
		{"negative token bound", scheduler.MapParams{"maxPrefixTokensToMatch": -1}, 0, 0, "", "maxPrefixTokensToMatch: expected 0 (use maxPrefixBlocksToMatch) or a number of tokens, found -1"},
		{"token bound too large", scheduler.MapParams{"maxPrefixTokensToMatch": 2000000000, "blockSizeTokens": 1}, 0, 0, "", "maxPrefixTokensToMatch: expected at most 1048576 blocks"},
		{"blockSize alone: ignored as GIE v1.5.0", scheduler.MapParams{"blockSize": 256}, 16, 256, "blockSize 256 (deprecated, in characters) is ignored, as GIE v1.5.0 ignores it; blocks are blockSizeTokens = 16 tokens; write blockSizeTokens: 64", ""},
		{"blockSize with blockSizeTokens: ignored", scheduler.MapParams{"blockSize": 256, "blockSizeTokens": 32}, 32, 256, "blockSize 256 (deprecated, in characters) is ignored because blockSizeTokens is set", ""},
		{"blockSize of the wrong type", scheduler.MapParams{"blockSize": "64"}, 0, 0, "", "blockSize: expected an integer"},
		{"blockSizeTokens 0", scheduler.MapParams{"blockSizeTokens": 0, "blockSize": 64}, 0, 0, "", "blockSizeTokens: expected 1..1048576 tokens, found 0"},
	}
	for _, typ := range []string{PrefixScorerType, PrefixProducerType} {
		f, _ := NewRegistry().Lookup(typ)
		for _, tc := range cases {
			pl, err := f.New("", tc.p)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("%s %s: err %v, want %q", typ, tc.name, err, tc.err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s %s: %v", typ, tc.name, err)
				continue
			}
			var cfg PrefixConfig
			var notes []string
			switch x := pl.(type) {
			case *PrefixScorer:
				cfg, notes = x.Config(), x.Notes()
				if x.maxBlocks != tc.maxBlocks {
					t.Errorf("%s %s: hashes up to %d blocks, want %d", typ, tc.name, x.maxBlocks, tc.maxBlocks)
				}
			case *prefixProducer:
				cfg, notes = x.cfg, x.Notes()
			}
			if cfg.BlockSizeTokens != tc.blockTok || cfg.MaxBlocks() != tc.maxBlocks {
				t.Errorf("%s %s: blockSizeTokens %d, max blocks %d; want %d, %d", typ, tc.name, cfg.BlockSizeTokens, cfg.MaxBlocks(), tc.blockTok, tc.maxBlocks)
			}
			if (tc.note == "") != (len(notes) == 0) || (tc.note != "" && (len(notes) != 1 || !strings.Contains(notes[0], tc.note))) {
				t.Errorf("%s %s: notes %q, want %q", typ, tc.name, notes, tc.note)
			}
		}
	}
}

// TestPrefixMaxTokens: maxPrefixTokensToMatch bounds the blocks scored, as
// maxPrefixBlocksToMatch does.
func TestPrefixMaxTokens(t *testing.T) {
	cfg := DefaultPrefixConfig()
	cfg.MaxPrefixTokensToMatch = 16 * 3 // 3 blocks
	r := newRig(t, cfg, 2)
	p := text(64*10, 61)
	first, _ := r.pick(t, req("m", p))
	// Differs from the 4th block on: still a full match of the 3 considered.
	q := append(append([]byte{}, p[:64*3]...), text(64*7, 62)...)
	if _, sc := r.pick(t, req("m", q)); sc[first] != 1 {
		t.Errorf("score %v, want 1 (only 3 blocks considered)", sc[first])
	}
}

// TestPrefixProducerBind: the producer's index parameters replace the
// scorers' (GIE's precedence), each scorer keeping fullScoreMatchBlocks; a
// second producer is refused.
func TestPrefixProducerBind(t *testing.T) {
	prod := newPluginWith(t, PrefixProducerType, scheduler.MapParams{"blockSizeTokens": 32, "maxPrefixTokensToMatch": 320, "autoTune": false}).(*prefixProducer)
	same := newPluginWith(t, PrefixScorerType, scheduler.MapParams{"blockSizeTokens": 32, "maxPrefixTokensToMatch": 320, "autoTune": false}).(*PrefixScorer)
	other := newPluginWith(t, PrefixScorerType, scheduler.MapParams{"fullScoreMatchBlocks": 4}).(*PrefixScorer)
	plugins := []scheduler.Plugin{prod, same, other}
	notes, err := prod.Bind(plugins, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], `prefix-cache-scorer "prefix-cache-scorer" uses this producer's index parameters (blockSizeTokens 32, maxPrefixBlocksToMatch 256, maxPrefixTokensToMatch 320, lruCapacityPerServer 31250, autoTune false) instead of its own (blockSizeTokens 16,`) {
		t.Errorf("notes %q", notes)
	}
	want := prod.cfg
	want.FullScoreMatchBlocks = 4
	if other.Config() != want || other.blockSize != 32*4 || other.maxBlocks != 10 {
		t.Errorf("scorer config %+v (block %d bytes, %d blocks), want %+v", other.Config(), other.blockSize, other.maxBlocks, want)
	}
	// Alone, the producer has no reader.
	if notes, _ := prod.Bind([]scheduler.Plugin{prod}, nil); len(notes) != 1 || !strings.Contains(notes[0], "has no effect") {
		t.Errorf("producer alone: notes %q", notes)
	}
	second := newPluginWith(t, PrefixProducerType, nil).(*prefixProducer)
	if _, err := second.Bind([]scheduler.Plugin{prod, second}, nil); err == nil || !strings.Contains(err.Error(), `a second approx-prefix-cache-producer (the first is "approx-prefix-cache-producer")`) {
		t.Errorf("second producer: %v", err)
	}
	if _, err := prod.Bind([]scheduler.Plugin{prod, second}, nil); err != nil {
		t.Errorf("first producer: %v", err)
	}
}

// TestPassiveTypes: the accepted types that take no part in a pick register
// as request-control kind, implement Passive with their role (callable on the
// registry's nil Proto) and refuse parameters they do not have.
func TestPassiveTypes(t *testing.T) {
	reg := NewRegistry()
	for typ, role := range map[string]string{
		InflightProducerType: RoleProducer,
		PrefixProducerType:   RoleProducer,
		OpenAIParserType:     RoleParser,
		ServedVerifierType:   RoleResponse,
	} {
		f, ok := reg.Lookup(typ)
		if !ok || f.Kind != scheduler.KindRequestControl {
			t.Errorf("%s: registered %v as %s, want request-control kind", typ, ok, f.Kind)
			continue
		}
		if p, ok := f.Proto.(Passive); !ok || p.Role() != role {
			t.Errorf("%s: Proto %T passive %v, want role %q", typ, f.Proto, ok, role)
		}
		pl, err := f.New("x", scheduler.MapParams(nil))
		if err != nil || pl.Name() != "x" || pl.Type() != typ {
			t.Errorf("%s: New = %v %v", typ, pl, err)
		}
		if typ != PrefixProducerType && len(f.Params) != 0 {
			t.Errorf("%s takes no parameters in GIE; lists %v", typ, f.Params)
		}
	}
	v := mustPlugin(t, ServedVerifierType).(scheduler.ResponseHeaderer)
	for _, tc := range []struct {
		served string
		hasLB  bool
		want   string
	}{
		{"10.0.0.1:8000", true, "10.0.0.1:8000"},
		{"", true, "fail: missing destination endpoint served metadata"},
		{"", false, "fail: missing envoy lb metadata"},
	} {
		if k, got := v.ResponseHeader(tc.served, tc.hasLB); k != ConformanceResultHeader || got != tc.want {
			t.Errorf("served %q lb %v: header %s: %q, want %q", tc.served, tc.hasLB, k, got, tc.want)
		}
	}
}
