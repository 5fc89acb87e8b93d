package engine

import "github.com/cespare/xxhash/v2"

// VocabSize bounds token IDs, like a real tokenizer's vocabulary (Llama 3's is 128,256).
const VocabSize = 128256

// Tokenize appends the token IDs of text to dst and returns it. The
// tokenisation is deterministic and approximate — about four bytes per token
// on English text — but, like a real BPE tokenizer, its boundaries follow
// words: a word with its leading space is split into round(len/4.5) (at
// least one) near-equal pieces, digits go in runs of up to three, every punctuation byte is one
// token and runs of whitespace are split every four bytes. Token boundaries
// therefore do not fall on fixed 4-byte windows of the text, so a router's
// byte-block prefix heuristic cannot match the server's blocks exactly.
func Tokenize(dst []uint32, text string) []uint32 {
	i := 0
	n := len(text)
	for i < n {
		c := text[i]
		start := i
		switch {
		case isWordByte(c) || (c == ' ' && i+1 < n && isWordByte(text[i+1])):
			// A word, with its leading space if it has one.
			if c == ' ' {
				i++
			}
			for i < n && isWordByte(text[i]) {
				i++
			}
			dst = appendPieces(dst, text[start:i])
		case isDigit(c) || (c == ' ' && i+1 < n && isDigit(text[i+1])):
			if c == ' ' {
				i++
			}
			for i < n && isDigit(text[i]) {
				i++
			}
			for s := start; s < i; {
				e := s + 3
				if s == start && text[s] == ' ' {
					e++
				}
				if e > i {
					e = i
				}
				dst = append(dst, tokenID(text[s:e]))
				s = e
			}
		case isSpace(c):
			for i < n && isSpace(text[i]) {
				i++
			}
			for s := start; s < i; s += 4 {
				e := min(s+4, i)
				dst = append(dst, tokenID(text[s:e]))
			}
		default:
			i++
			dst = append(dst, tokenID(text[start:i]))
		}
	}
	return dst
}

func appendPieces(dst []uint32, word string) []uint32 {
	L := len(word)
	k := max(1, (2*L+4)/9) // round(L/4.5)
	for j := 0; j < k; j++ {
		s, e := j*L/k, (j+1)*L/k
		dst = append(dst, tokenID(word[s:e]))
	}
	return dst
}

func tokenID(piece string) uint32 { return uint32(xxhash.Sum64String(piece) % VocabSize) }

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// outputWords are the pieces simulated generations are made of: short,
// common words with their leading space, each exactly one token under Tokenize,
// so a generation fed back as the next turn's prompt hashes to the same blocks.
var outputWords = [...]string{
	" the", " of", " and", " to", " in", " is", " it", " for", " on", " was",
	" as", " with", " be", " by", " at", " this", " are", " from", " or", " an",
	" we", " can", " not", " but", " all", " one", " has", " more", " will", " so",
	" if", " out",
}

// OutputToken returns the i-th generated token of a request with the given
// seed: its text and its ID as Tokenize would assign it.
func OutputToken(seed uint64, i int) (string, uint32) {
	w := outputWords[(seed+uint64(i)*0x9e3779b97f4a7c15)>>59]
	return w, outputIDs[(seed+uint64(i)*0x9e3779b97f4a7c15)>>59]
}

var outputIDs = func() (ids [len(outputWords)]uint32) {
	for i, w := range outputWords {
		ids[i] = tokenID(w)
	}
	return ids
}()
