package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestVersionFlag: --version prints one line naming the binary and its
// version, and exits 0.
func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb, func() { t.Fatal("simulator started serving") }); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		if s := out.String(); !strings.HasPrefix(s, "simulator dev (") || strings.Count(s, "\n") != 1 {
			t.Fatalf("%v printed %q; want one line starting with \"simulator dev (\"", args, s)
		}
	}
}
