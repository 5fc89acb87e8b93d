package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestVersionFlag: --version prints one line naming the binary and its
// version, and exits 0.
func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		if s := out.String(); !strings.HasPrefix(s, "loadgen dev (") || strings.Count(s, "\n") != 1 {
			t.Fatalf("%v printed %q; want one line starting with \"loadgen dev (\"", args, s)
		}
	}
}
