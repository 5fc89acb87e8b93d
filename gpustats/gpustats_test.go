package gpustats

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedNow is the clock of every golden test.
var fixedNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func clock() time.Time { return fixedNow }

// golden compares v's indented JSON with testdata/name (or rewrites it with -update).
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
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
		t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestAbsentIsNullInJSON(t *testing.T) {
	b, err := json.Marshal(GPU{Index: 3, GfxActivityPercent: F(0)})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mem_activity_percent", "vram_used_bytes", "vram_total_bytes", "power_watts", "power_cap_watts",
		"edge_temperature_celsius", "junction_temperature_celsius", "memory_temperature_celsius", "sclk_hz", "mclk_hz"} {
		v, ok := m[k]
		if !ok || v != nil {
			t.Errorf("%s: want present and null, found %v (present %v)", k, v, ok)
		}
	}
	if m["gfx_activity_percent"] != 0.0 {
		t.Errorf("a present 0 must stay 0, found %v", m["gfx_activity_percent"])
	}
	for _, k := range []string{"index", "read_time"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
}

func TestNewPicks(t *testing.T) {
	// With the amdsmi tag these tests run against the stub libamd_smi: make
	// its init fail so auto falls through to sysfs (amdsmi_test.go covers the
	// success).
	t.Setenv("GPUSTATS_AMDSMI_STUB", "init_fail")
	amdTree := t.TempDir()
	writeTree(t, amdTree, map[string]string{"class/drm/card0/device/vendor": "0x1002\n"})
	nvTree := t.TempDir()
	writeTree(t, nvTree, map[string]string{"class/drm/card0/device/vendor": "0x10de\n"})
	cases := []struct {
		name     string
		opts     Options
		wantName string
		wantErr  string
	}{
		{"auto with an AMD card", Options{SysfsRoot: amdTree}, "sysfs", ""},
		{"auto keyword", Options{Kind: "auto", SysfsRoot: amdTree}, "sysfs", ""},
		{"auto without AMD cards", Options{SysfsRoot: nvTree}, "none", ""},
		{"auto without sysfs", Options{SysfsRoot: filepath.Join(nvTree, "missing")}, "none", ""},
		{"sysfs explicit", Options{Kind: "sysfs", SysfsRoot: nvTree}, "sysfs", ""},
		{"fake", Options{Kind: "fake"}, "fake", ""},
		{"exporter", Options{Kind: "exporter", ExporterURL: "http://127.0.0.1:1/metrics"}, "exporter", ""},
		{"exporter without URL", Options{Kind: "exporter"}, "", "expected an exporter URL"},
		{"exporter bad URL", Options{Kind: "exporter", ExporterURL: "127.0.0.1:9400"}, "", `expected an http:// or https:// URL, found "127.0.0.1:9400"`},
		{"unknown", Options{Kind: "nvml"}, "", `found "nvml"`},
	}
	if !AMDSMICompiledIn {
		cases = append(cases, struct {
			name     string
			opts     Options
			wantName string
			wantErr  string
		}{"amdsmi not compiled in", Options{Kind: "amdsmi"}, "", "not compiled in"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(c.opts)
			if c.wantErr != "" {
				if err == nil || !contains(err.Error(), c.wantErr) {
					t.Fatalf("want error containing %q, found %v", c.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer Close(s)
			if s.Name() != c.wantName {
				t.Errorf("source %q, want %q", s.Name(), c.wantName)
			}
		})
	}
}

func TestFakeAndEmpty(t *testing.T) {
	f := &Fake{GPUs: DemoGPUs(), Now: clock}
	got, err := f.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "fake_demo.json", got)
	got[0].Product = "changed"
	if again, _ := f.Read(context.Background()); again[0].Product == "changed" {
		t.Error("Read returned the fake's own slice")
	}
	if g, err := (Empty{}).Read(context.Background()); g != nil || err != nil {
		t.Errorf("Empty: %v, %v", g, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Read(ctx); err == nil {
		t.Error("fake ignores a cancelled context")
	}
}

func contains(s, sub string) bool { return bytes.Contains([]byte(s), []byte(sub)) }

// writeTree writes files (path relative to root → content) and symlinks
// (content "->target").
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
