package scorers

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/bits"
)

// blockKey is the per-instance secret that keys the prefix index's block
// hashes (see blockHash).
type blockKey [9]uint64

// newBlockKey draws a key from the operating system's random source.
func newBlockKey() blockKey {
	var b [9 * 8]byte
	_, _ = crand.Read(b[:]) // never fails (Go ≥ 1.24 crashes instead)
	var k blockKey
	for i := range k {
		k[i] = binary.LittleEndian.Uint64(b[8*i:]) | 1 // odd: never a zero multiplier
	}
	return k
}

// blockHash is the keyed hash of one prompt block: each pair of 64-bit words
// is XORed with secret key words and multiplied into a 128-bit product whose
// halves are folded (the wyhash/rapidhash construction), the pair results are
// summed with the length and mixed once more. Without the key a client cannot
// predict any output bit, so it cannot craft prompts whose hashes pile into
// one run of index slots (TestPrefixFloodKeyed); the values are private to the
// process and need not match GIE's.
//
// As a call it costs about what hash/maphash does (BenchmarkBlockHash);
// written out in hashPrompt's loop for the default 64-byte block it is what
// makes a prompt's hash ~30% cheaper (PrefixScorerType). TestBlockHashSpreads
// checks that it spreads and that the key matters.
func blockHash(k *blockKey, b []byte) uint64 {
	if len(b) == 64 {
		return foldMix(kernel64(k, b)+64, k[8])
	}
	acc := uint64(len(b))
	for len(b) >= 64 {
		acc = foldMix(acc+kernel64(k, b), k[8])
		b = b[64:]
	}
	j := 0 // the tail, under 64 bytes: 16-byte pairs, then the rest padded
	for ; len(b) >= 16; j += 2 {
		hi, lo := bits.Mul64(binary.LittleEndian.Uint64(b)^k[j], binary.LittleEndian.Uint64(b[8:])^k[j+1])
		acc += hi ^ lo
		b = b[16:]
	}
	if n := len(b); n > 0 { // 1..15 bytes: two overlapping loads, no copy
		var a, c uint64
		switch {
		case n >= 8:
			a, c = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[n-8:])
		case n >= 4:
			a, c = uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[n-4:]))
		default:
			a = uint64(b[0])<<16 | uint64(b[n/2])<<8 | uint64(b[n-1])
		}
		hi, lo := bits.Mul64(a^k[j]^uint64(n), c^k[j+1])
		acc += hi ^ lo
	}
	return foldMix(acc, k[8])
}

// kernel64 folds the first 64 bytes of b under k[0..7].
func kernel64(k *blockKey, b []byte) uint64 {
	w := b[:64:64]
	h1, l1 := bits.Mul64(binary.LittleEndian.Uint64(w[0:])^k[0], binary.LittleEndian.Uint64(w[8:])^k[1])
	h2, l2 := bits.Mul64(binary.LittleEndian.Uint64(w[16:])^k[2], binary.LittleEndian.Uint64(w[24:])^k[3])
	h3, l3 := bits.Mul64(binary.LittleEndian.Uint64(w[32:])^k[4], binary.LittleEndian.Uint64(w[40:])^k[5])
	h4, l4 := bits.Mul64(binary.LittleEndian.Uint64(w[48:])^k[6], binary.LittleEndian.Uint64(w[56:])^k[7])
	return (h1 ^ l1) + (h2 ^ l2) + (h3 ^ l3) + (h4 ^ l4)
}

// foldMix mixes x with the key word s through one more 128-bit product.
func foldMix(x, s uint64) uint64 {
	hi, lo := bits.Mul64(x^s, 0x9E3779B97F4A7C15)
	return hi ^ lo
}
