package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad: any input either loads (and its effective config loads again to
// the same text) or fails with an error; it never panics. Seeds are the
// golden configs and one config per parameter of every plugin type
// (everyParam), so plain `go test` runs them.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte("plugins: [&a {type: queue-scorer}, *a]"))
	f.Add([]byte("plugins:\n- type: prefix-cache-scorer\n  parameters: {blockSizeTokens: !!float 1e9}"))
	f.Add([]byte("plugins:\n- type: prefix-cache-scorer\n  parameters: {blockSize: 256}"))
	f.Add([]byte("plugins:\n- type: core-metrics-extractor\n  parameters:\n    engineConfigs: &e [{name: a, kvUsageSpec: k}]\n- name: c2\n  type: core-metrics-extractor\n  parameters: {engineConfigs: *e}"))
	f.Add([]byte("plugins:\n- type: core-metrics-extractor\n  parameters:\n    engineConfigs:\n    - name: a # mine\n      kvUsageSpec: 'k{x=\"1\"}'\n    -   name: b\n        cacheInfoSpec: c\n        kvUsageSpec: k\n"))
	for typ, params := range everyParam {
		for _, p := range params {
			f.Add([]byte(pluginYAML(typ, [][2]string{p})))
		}
	}
	reg := NewRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Load(data, reg)
		if err != nil {
			return
		}
		again, err := Load(l.Effective, reg)
		if err != nil {
			t.Fatalf("effective config does not load: %v\n%s", err, l.Effective)
		}
		if string(again.Effective) != string(l.Effective) {
			t.Fatalf("effective config not a fixed point:\n%s\n---\n%s", l.Effective, again.Effective)
		}
	})
}
