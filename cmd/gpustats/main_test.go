package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastepp/fastepp/gpustats"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// sysfsTree writes a node with an MI300X-style card (no edge sensor, no
// power1_average), an NVIDIA card and a connector entry.
func sysfsTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	d := "class/drm/card1/device/"
	hw := d + "hwmon/hwmon2/"
	files := map[string]string{
		d + "vendor": "0x1002\n", d + "product_name": "AMD Instinct MI300X\n", d + "unique_id": "0x6c8e6f5a1b2c3d4e\n",
		d + "gpu_busy_percent": "88\n", d + "mem_busy_percent": "30\n",
		d + "mem_info_vram_total": "206141652992\n", d + "mem_info_vram_used": "185527484416\n",
		hw + "power1_input": "640000000\n", hw + "power1_cap": "750000000\n",
		hw + "temp2_input": "79000\n", hw + "temp2_label": "junction\n", hw + "temp3_input": "67000\n", hw + "temp3_label": "mem\n",
		hw + "freq1_input": "2100000000\n", hw + "freq2_input": "1300000000\n",
		"class/drm/card0/device/vendor":      "0x10de\n",
		"class/drm/card1-DP-1/device/vendor": "0x1002\n",
	}
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb, nil)
	return code, out.String(), errb.String()
}

var readTimeRE = regexp.MustCompile(`"read_time": "[^"]*"`)

// stripReadTime checks that s is a JSON array of objects, each with a
// read_time, and blanks read_time (the wall clock), keeping the bytes
// otherwise as printed.
func stripReadTime(t *testing.T, s string) []byte {
	t.Helper()
	var gpus []map[string]any
	if err := json.Unmarshal([]byte(s), &gpus); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, s)
	}
	if n := len(readTimeRE.FindAllString(s, -1)); n != len(gpus) {
		t.Errorf("%d read_time fields for %d GPUs", n, len(gpus))
	}
	return []byte(readTimeRE.ReplaceAllString(s, `"read_time": "X"`))
}

func TestOnce(t *testing.T) {
	root := sysfsTree(t)
	exp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = gpustats.WriteExporter(w, gpustats.DemoGPUs(), "node-e")
	}))
	defer exp.Close()
	cases := []struct {
		name   string
		args   []string
		golden string
	}{
		{"sysfs json", []string{"--source", "sysfs", "--sysfs-root", root, "--once", "--format", "json"}, "sysfs.json"},
		{"sysfs table", []string{"--source", "sysfs", "--sysfs-root", root, "--once", "--format", "table"}, "sysfs.txt"},
		{"auto finds sysfs", []string{"--sysfs-root", root, "--once"}, "sysfs.txt"},
		{"auto without GPUs", []string{"--sysfs-root", t.TempDir(), "--once"}, "none.txt"},
		{"auto without GPUs json", []string{"--sysfs-root", t.TempDir(), "--once", "--format", "json"}, "none.json"},
		{"fake json", []string{"--source", "fake", "--once", "--format", "json"}, "fake.json"},
		{"fake table", []string{"--source", "fake", "--once"}, "fake.txt"},
		{"exporter table", []string{"--source", "exporter", "--exporter-url", exp.URL + "/metrics", "--once"}, "exporter.txt"},
	}
	if gpustats.AMDSMICompiledIn {
		t.Setenv("GPUSTATS_AMDSMI_STUB", "init_fail") // the stub library: let auto fall through
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runArgs(t, c.args...)
			if code != 0 || errs != "" {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
			b := []byte(out)
			if strings.HasSuffix(c.golden, ".json") {
				b = stripReadTime(t, out)
			}
			golden(t, c.golden, b)
		})
	}
}

func TestFailures(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "nope", 500) }))
	defer bad.Close()
	cases := []struct {
		name    string
		args    []string
		code    int
		wantErr string
	}{
		{"bad format", []string{"--format", "xml"}, 2, `--format: expected json or table, found "xml"`},
		{"unknown source", []string{"--source", "nvml"}, 2, `--source: expected one of auto|sysfs|amdsmi|exporter|fake, found "nvml"`},
		{"exporter without URL", []string{"--source", "exporter"}, 2, "expected --exporter-url, found none"},
		{"exporter URL without scheme", []string{"--source", "exporter", "--exporter-url", "127.0.0.1:9400"}, 1, `expected an http:// or https:// URL, found "127.0.0.1:9400"`},
		{"stray argument", []string{"--once", "extra"}, 2, `found "extra"`},
		{"unknown flag", []string{"--nope"}, 2, "flag provided but not defined: -nope"},
		{"zero interval", []string{"--interval", "0s"}, 2, "--interval: expected a positive duration"},
		{"missing sysfs", []string{"--source", "sysfs", "--sysfs-root", "/nonexistent-gpustats", "--once"}, 1, "expected the DRM class directory"},
		{"exporter down", []string{"--source", "exporter", "--exporter-url", deadURL, "--once"}, 1, "connection refused"},
		{"exporter 500", []string{"--source", "exporter", "--exporter-url", bad.URL, "--once"}, 1, "expected HTTP 200, found 500"},
		{"serve listen", []string{"serve", "--source", "fake", "--listen", "256.0.0.1:0"}, 1, "--listen 256.0.0.1:0"},
		{"serve has no --once", []string{"serve", "--once"}, 2, "flag provided but not defined: -once"},
	}
	if !gpustats.AMDSMICompiledIn {
		cases = append(cases, struct {
			name    string
			args    []string
			code    int
			wantErr string
		}{"amdsmi not compiled in", []string{"--source", "amdsmi", "--once"}, 1, "amd-smi support is not compiled in (build with -tags amdsmi"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := runArgs(t, c.args...)
			if code != c.code || !strings.Contains(errs, c.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errs, c.code, c.wantErr)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"serve", "--help"}} {
		code, out, _ := runArgs(t, args...)
		if code != 0 || !strings.Contains(out, "gpustats serve [--listen :9400]") || !strings.Contains(out, "-source") {
			t.Errorf("%v: exit %d, output %q", args, code, out)
		}
	}
	for _, args := range [][]string{{"--version"}, {"serve", "--version"}} {
		code, out, _ := runArgs(t, args...)
		if code != 0 || !strings.HasPrefix(out, "gpustats dev (") || strings.Count(out, "\n") != 1 {
			t.Errorf("%v: exit %d, printed %q; want one line starting with \"gpustats dev (\"", args, code, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRepeatsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--source", "fake", "--interval", "5ms", "--format", "json"}, &out, &errb, nil)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), `"index": 0`) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if n := strings.Count(out.String(), `"index": 0`); n < 3 {
		t.Fatalf("%d reads, want at least 3", n)
	}
}

// startServe runs `gpustats serve` on 127.0.0.1:0 and returns its /metrics URL.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var out, errb syncBuffer
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, args...), &out, &errb, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not start")
	}
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exit %d: %s", code, errb.String())
		}
	})
	if !strings.Contains(out.String(), "gpustats serving on http://"+addr+"/metrics") {
		t.Errorf("start line missing: %q", out.String())
	}
	return "http://" + addr + "/metrics"
}

// TestServeRoundTrip serves what a node-local source reads and scrapes it
// back with the exporter source: every present value survives (power cap is
// not in the exporter's names), absent ones stay absent, labels attach the
// GPUs to the sidecar's pod.
func TestServeRoundTrip(t *testing.T) {
	root := sysfsTree(t)
	sysGPUs, err := gpustats.NewSysfs(root, nil).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		want []gpustats.GPU
	}{
		{"fake", []string{"--source", "fake"}, gpustats.DemoGPUs()},
		{"sysfs", []string{"--source", "sysfs", "--sysfs-root", root}, sysGPUs},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := startServe(t, append(c.args, "--hostname", "node-x", "--pod", "vllm-7", "--namespace", "llm")...)
			src, err := gpustats.New(gpustats.Options{Kind: "exporter", ExporterURL: url})
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Read(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("%d GPUs back, want %d", len(got), len(c.want))
			}
			for i, w := range c.want {
				w.PowerCapWatts = nil
				w.Host, w.Pod, w.Namespace = "node-x", "vllm-7", "llm"
				w.ReadTime, got[i].ReadTime = time.Time{}, time.Time{}
				gb, _ := json.Marshal(got[i])
				wb, _ := json.Marshal(w)
				if !bytes.Equal(gb, wb) {
					t.Errorf("gpu %d:\n got %s\nwant %s", i, gb, wb)
				}
			}
			if a := gpustats.Attach(got, []gpustats.EndpointRef{{Pod: "vllm-7", Namespace: "llm"}}); len(a[0]) != len(c.want) {
				t.Errorf("attached %d GPUs to the sidecar's pod", len(a[0]))
			}
		})
	}
}

func TestServeSourceError(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	url := startServe(t, "--source", "exporter", "--exporter-url", deadURL)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body.String(), "source exporter:") {
		t.Fatalf("status %d, body %q; want 503 naming the source", resp.StatusCode, body.String())
	}
}
