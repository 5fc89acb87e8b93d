package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestVersionFlag: --version prints one line naming the binary and its
// version, and exits 0.
func TestVersionFlag(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"--version", "--direct", "10.0.0.1:1"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb, nil); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		if s := out.String(); !strings.HasPrefix(s, "gateway dev (") || strings.Count(s, "\n") != 1 {
			t.Fatalf("%v printed %q; want one line starting with \"gateway dev (\"", args, s)
		}
	}
}
