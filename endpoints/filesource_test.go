package endpoints

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFileWatchParsesOnlyChanges: an unchanged file is not read again once
// its modification time is older than the racy window, a rewrite with the
// same bytes is read but not parsed, and only new content is parsed.
func TestFileWatchParsesOnlyChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eps.yaml")
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	parse := func(data []byte) ([]Target, error) { return ParseTargets(data, path) }
	var w fileWatch
	check := func(wantChanged bool, wantReads, wantParses int) {
		t.Helper()
		_, changed, err := w.check(path, parse)
		if err != nil || changed != wantChanged || w.reads != wantReads || w.parses != wantParses {
			t.Fatalf("changed %v, reads %d, parses %d, err %v; want %v, %d, %d", changed, w.reads, w.parses, err, wantChanged, wantReads, wantParses)
		}
	}
	old := time.Now().Add(-time.Hour)
	write("- {address: 10.0.0.1, port: 8000}\n", old)
	check(true, 1, 1)
	for range 5 {
		check(false, 1, 1) // stat only
	}
	write("- {address: 10.0.0.1, port: 8000}\n", old.Add(time.Minute)) // touched: same bytes
	check(false, 2, 1)
	check(false, 2, 1)
	write("- {address: 10.0.0.2, port: 8000}\n", old.Add(2*time.Minute)) // same size, new bytes
	check(true, 3, 2)

	// A file modified just now may change again within the same timestamp:
	// it is read (and hashed) on every check until it is older, never parsed
	// again while its bytes are the same.
	write("- {address: 10.0.0.3, port: 8000}\n", time.Now())
	check(true, 4, 3)
	check(false, 5, 3)
}

// TestFileSourceSizeLimit: a file over MaxTargetsFileBytes is refused
// without reading it, with the limit and the size in the error, and the last
// good list stays.
func TestFileSourceSizeLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eps.yaml")
	if err := os.WriteFile(path, []byte("- {address: 10.0.0.1, port: 8000}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := &FileSource{Path: path, Poll: 5 * time.Millisecond, Logger: testLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var updates atomic.Int64
	go func() { done <- src.Run(ctx, func(ts []Target) { updates.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	eventually(t, "first list", func() bool { return updates.Load() == 1 })

	big := make([]byte, MaxTargetsFileBytes+1)
	for i := range big {
		big[i] = ' '
	}
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("expected at most %d bytes (4 MiB), found %d bytes; the file is not read", MaxTargetsFileBytes, len(big))
	eventually(t, "size error", func() bool { return src.Err() != nil && strings.Contains(src.Err().Error(), want) })
	if updates.Load() != 1 {
		t.Fatalf("an oversized file changed the list (%d updates)", updates.Load())
	}
	if _, err := ReadTargetsFile(path); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("ReadTargetsFile: err = %v, want %q", err, want)
	}
}

// TestFileSourceLogsEachErrorOnce: a bad file is logged once however many
// polls see it; each distinct error once until a good version loads.
func TestFileSourceLogsEachErrorOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eps.yaml")
	write := func(content string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	const badA, badB = "- {address: 10.0.0.1, prot: 1}\n", "- {address: nope, port: 1}\n"
	write(badA)
	logs := &logCounter{}
	src := &FileSource{Path: path, Poll: 2 * time.Millisecond, Logger: slog.New(logs)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func([]Target) {}) }()
	defer func() {
		cancel()
		<-done
	}()
	const noList, keep = "endpoints file rejected; no endpoints yet", "endpoints file rejected; keeping the last good list"
	errIs := func(s string) func() bool {
		return func() bool { e := src.Err(); return e != nil && strings.Contains(e.Error(), s) }
	}
	settle := func() { time.Sleep(60 * time.Millisecond) } // ~30 polls
	eventually(t, "error A", errIs(`"prot"`))
	settle()
	if n := logs.count(noList); n != 1 {
		t.Fatalf("error A logged %d times over many polls, want 1", n)
	}
	write(badB)
	eventually(t, "error B", errIs(`"nope"`))
	write(badA)
	eventually(t, "error A again", errIs(`"prot"`))
	settle()
	if n := logs.count(noList); n != 2 {
		t.Fatalf("errors A, B, A logged %d times, want 2 (one per distinct error)", n)
	}
	write("- {address: 10.0.0.1, port: 1}\n")
	eventually(t, "good file", func() bool { return src.Err() == nil })
	write(badA)
	eventually(t, "error A after a good version", errIs(`"prot"`))
	settle()
	if n := logs.count(keep); n != 1 {
		t.Fatalf("error A after a good version logged %d times, want 1", n)
	}
	if n := logs.count("endpoints file loaded"); n != 1 {
		t.Fatalf("good version logged %d times, want 1", n)
	}
}

// TestParseTargetsUnderScrapeConfig: engine labels in an endpoints file are
// checked against the configured engines and engine label key.
func TestParseTargetsUnderScrapeConfig(t *testing.T) {
	file := "- address: 10.0.0.1\n  port: 1\n  labels: {my.io/engine: mine, " + EngineLabel + ": tgi}\n"
	custom := ScrapeConfig{EngineLabelKey: "my.io/engine", Engines: []EngineConfig{{Name: "mine", KVUsageSpec: "k"}}}
	if _, err := custom.ParseTargets([]byte(file), "f.yaml"); err != nil {
		t.Fatalf("configured engine under the configured key: %v", err)
	}
	if _, err := (ScrapeConfig{EngineLabelKey: "my.io/engine"}).ParseTargets([]byte(file), "f.yaml"); err == nil ||
		!strings.Contains(err.Error(), `f.yaml:3: field "labels": label my.io/engine: expected one of vllm, sglang, trtllm, triton-tensorrt-llm, trtllm-serve, found "mine"`) {
		t.Fatalf("engine not configured: err = %v", err)
	}
	if _, err := ParseTargets([]byte(file), "f.yaml"); err == nil || !strings.Contains(err.Error(), `found "tgi"`) {
		t.Fatalf("default key: err = %v", err)
	}
}
