package scorers

import (
	"hash/maphash"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/fastepp/fastepp/scheduler"
)

// BenchmarkBlockHash compares keyed block hashes over one 2 KB prompt in
// 64-byte blocks (what a pick hashes with the default 16-token blocks): the
// comparison PrefixScorerType's comment quotes. On a shared VM, compare the
// minimum of several interleaved runs, not one run.
func BenchmarkBlockHash(b *testing.B) {
	prompt := text(2048, 3)
	seed := maphash.MakeSeed()
	key := newBlockKey()
	var sink uint64
	b.Run("hash=maphash", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j := 0; j+64 <= len(prompt); j += 64 {
				sink ^= maphash.Bytes(seed, prompt[j:j+64])
			}
		}
	})
	b.Run("hash=xxhash", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j := 0; j+64 <= len(prompt); j += 64 {
				sink ^= xxhash.Sum64(prompt[j : j+64])
			}
		}
	})
	b.Run("hash=mulfold", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j := 0; j+64 <= len(prompt); j += 64 {
				sink ^= blockHash(&key, prompt[j:j+64])
			}
		}
	})
	b.Run("hash=mulfold-generic", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j := 0; j+64 <= len(prompt); j += 64 {
				sink ^= blockHash(&key, prompt[j:j+60]) // not 64: the generic loop (15-token blocks)
			}
		}
	})
	_ = sink
}

// TestHashPromptIsBlockHash: hashPrompt's written-out loop for 64-byte
// blocks gives blockHash's values, chained, for every block size the loop
// and the generic path share a prompt with (16-token blocks are the written
// out loop; 15 and 17 the generic one).
func TestHashPromptIsBlockHash(t *testing.T) {
	for _, tokens := range []int{15, 16, 17} {
		cfg := DefaultPrefixConfig()
		cfg.BlockSizeTokens = tokens
		p := newPrefix(t, cfg)
		prompt := text(2048+13, uint64(tokens))
		r := &scheduler.Request{Model: "m"}
		r.SetPrompt(prompt)
		got := p.hashPrompt(&prefixState{}, r)
		bs := tokens * bytesPerToken
		h := maphash.String(p.key, "m")
		var want []uint64
		for off := 0; off+bs <= len(prompt); off += bs {
			h = chain(h, blockHash(&p.bkey, prompt[off:off+bs]))
			want = append(want, nonZero(h))
		}
		if len(got) != len(want) {
			t.Fatalf("%d-token blocks: %d hashes, want %d", tokens, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%d-token blocks: block %d hash %#x, want %#x (chained blockHash)", tokens, i, got[i], want[i])
			}
		}
	}
}

// TestBlockHashSpreads: blocks differing in one bit anywhere, or only in
// length, hash differently, and two keys give unrelated values.
func TestBlockHashSpreads(t *testing.T) {
	k1, k2 := newBlockKey(), newBlockKey()
	for _, n := range []int{64, 4, 20, 63, 128, 200} {
		base := text(n, uint64(n))
		h := blockHash(&k1, base)
		if blockHash(&k2, base) == h {
			t.Errorf("len %d: two keys gave the same hash", n)
		}
		seen := map[uint64]bool{h: true}
		for i := 0; i < n*8; i++ {
			b := append([]byte(nil), base...)
			b[i/8] ^= 1 << (i % 8)
			v := blockHash(&k1, b)
			if seen[v] {
				t.Fatalf("len %d: flipping bit %d collides", n, i)
			}
			seen[v] = true
		}
		if n > 1 && blockHash(&k1, base[:n-1]) == h {
			t.Errorf("len %d: prefix of length %d collides", n, n-1)
		}
	}
}

// BenchmarkHashPrompt is the whole prompt hash of a pick: a 2 KB prompt in
// the default 64-byte blocks, block hashes and chain.
func BenchmarkHashPrompt(b *testing.B) {
	p := newPrefix(b, DefaultPrefixConfig())
	r := &scheduler.Request{Model: "meta-llama/Llama-3.1-8B-Instruct"}
	r.SetPrompt(text(2048, 3))
	st := &prefixState{}
	st.hashes = p.hashPrompt(st, r) // its buffers, grown once
	b.ReportAllocs()
	for b.Loop() {
		st.hashes = p.hashPrompt(st, r)
	}
}
