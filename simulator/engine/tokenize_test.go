package engine

import (
	"slices"
	"testing"
)

const english = `Routing only matters because model servers queue, run out of KV cache, and reuse cached prefixes. ` +
	`The simulator must reproduce exactly those effects, cheaply enough that one process hosts a fleet. ` +
	`In 2024, the company reported revenue of 12,345 million dollars, up 17% from the previous year.`

func TestTokenizeAboutFourBytesPerToken(t *testing.T) {
	toks := Tokenize(nil, english)
	ratio := float64(len(english)) / float64(len(toks))
	if ratio < 3.3 || ratio > 4.7 {
		t.Fatalf("%.2f bytes per token, want about 4", ratio)
	}
	if again := Tokenize(nil, english); !slices.Equal(toks, again) {
		t.Fatal("tokenisation is not deterministic")
	}
}

func TestTokenBoundariesFollowWordsNotByteWindows(t *testing.T) {
	cases := []struct {
		a, b string
		same int // trailing tokens that must agree
	}{
		// One byte more at the front shifts every fixed 4-byte window, but words re-align.
		{"hello world and more words here", "Xhello world and more words here", 5},
		{"a b c", "a b c", 3},
	}
	for _, c := range cases {
		ta, tb := Tokenize(nil, c.a), Tokenize(nil, c.b)
		if !slices.Equal(ta[len(ta)-c.same:], tb[len(tb)-c.same:]) {
			t.Errorf("%q vs %q: trailing %d tokens differ: %v vs %v", c.a, c.b, c.same, ta, tb)
		}
	}
	cases2 := []struct {
		text string
		want int
	}{
		{"", 0}, {" the", 1}, {"international", 3}, {"12345", 2}, {"a,b", 3}, {"\n\n\n\n\n", 2}, {"héllo", 1},
	}
	for _, c := range cases2 {
		if got := len(Tokenize(nil, c.text)); got != c.want {
			t.Errorf("Tokenize(%q) = %d tokens, want %d", c.text, got, c.want)
		}
	}
}

func TestOutputTokensRetokenizeToThemselves(t *testing.T) {
	for i := range 64 {
		text, id := OutputToken(42, i)
		if toks := Tokenize(nil, text); len(toks) != 1 || toks[0] != id {
			t.Fatalf("output token %d %q: Tokenize gives %v, want [%d]", i, text, toks, id)
		}
	}
}
