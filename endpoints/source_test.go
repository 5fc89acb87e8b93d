package endpoints

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseStatic(t *testing.T) {
	tests := []struct {
		in    string
		want  []string
		error string
	}{
		{"10.0.0.1:8000", []string{"10.0.0.1:8000"}, ""},
		{" 10.0.0.1:8000 , [::1]:9000", []string{"10.0.0.1:8000", "[::1]:9000"}, ""},
		{"10.0.0.1:8000,", nil, "entry 2: expected ip:port, found an empty entry"},
		{"pod-a:8000", nil, `entry 1: endpoint: expected ip:port (e.g. 10.0.0.1:8000 or [::1]:8000), found "pod-a:8000"`},
		{"10.0.0.1:0", nil, "expected a port in 1..65535"},
		{"10.0.0.1:8000,10.0.0.1:8000", nil, "entry 2: expected each ip:port once, found 10.0.0.1:8000 again"},
	}
	for _, tt := range tests {
		got, err := ParseStatic(tt.in)
		if tt.error != "" {
			if err == nil || !strings.Contains(err.Error(), tt.error) {
				t.Errorf("ParseStatic(%q) error = %v; want %q", tt.in, err, tt.error)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseStatic(%q): %v", tt.in, err)
			continue
		}
		var names []string
		for _, tg := range got {
			names = append(names, tg.Name)
			if tg.URL() != "http://"+tg.HostPort()+"/metrics" {
				t.Errorf("URL = %q", tg.URL())
			}
		}
		if strings.Join(names, ",") != strings.Join(tt.want, ",") {
			t.Errorf("ParseStatic(%q) = %v; want %v", tt.in, names, tt.want)
		}
	}
}

func TestParseTargets(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // "name url labels;..." of the targets
		error    string
	}{
		{"yaml", `
- address: 10.0.0.1
  port: 8000
- address: 10.0.0.2
  port: 8001
  name: pod-b
  metricsURL: http://10.0.0.2:9090/metrics
  labels:
    inference.networking.k8s.io/engine-type: sglang
`, "10.0.0.1:8000 http://10.0.0.1:8000/metrics map[];pod-b http://10.0.0.2:9090/metrics map[inference.networking.k8s.io/engine-type:sglang]", ""},
		{"json", `[{"address": "::1", "port": 8000, "labels": {"role": "decode"}}]`,
			"[::1]:8000 http://[::1]:8000/metrics map[role:decode]", ""},
		{"empty list", "[]", "", ""},
		{"empty file", "  \n", "", "f.yaml: expected a YAML or JSON list of endpoints, found an empty file"},
		{"not a list", "address: 10.0.0.1\n", "", "f.yaml:1: expected a list of endpoints, found an object"},
		{"item not an object", "- 10.0.0.1:8000\n", "", `f.yaml:1: expected an endpoint object {address, port, ...}, found the value "10.0.0.1:8000"`},
		{"unknown field", "- address: 10.0.0.1\n  port: 1\n  weight: 2\n", "", `f.yaml:3: field "weight": unknown field; expected one of address, port, metricsURL, labels, name`},
		{"hostname", "- address: pod-a.svc\n  port: 1\n", "", `f.yaml:1: field "address": expected an IP address, found "pod-a.svc"`},
		{"bad port", "- address: 10.0.0.1\n  port: 70000\n", "", `f.yaml:2: field "port": expected an integer in 1..65535, found "70000"`},
		{"missing port", "- address: 10.0.0.1\n", "", `f.yaml:1: field "port": missing`},
		{"missing address", "- port: 80\n", "", `f.yaml:1: field "address": missing`},
		{"bad url", "- address: 10.0.0.1\n  port: 1\n  metricsURL: ftp://x/metrics\n", "", `f.yaml:3: field "metricsURL": expected an http:// or https:// URL, found "ftp://x/metrics"`},
		{"labels not a map", "- address: 10.0.0.1\n  port: 1\n  labels: [a]\n", "", `f.yaml:3: field "labels": expected a map of strings, found a list`},
		{"bad engine", "- address: 10.0.0.1\n  port: 1\n  labels: {inference.networking.k8s.io/engine-type: tgi}\n", "", `f.yaml:3: field "labels": label inference.networking.k8s.io/engine-type: expected one of vllm, sglang, trtllm, triton-tensorrt-llm, trtllm-serve, found "tgi"`},
		{"duplicate", "- {address: 10.0.0.1, port: 1}\n- {address: 10.0.0.1, port: 1}\n", "", "f.yaml:2: expected each address:port once, found 10.0.0.1:1 again (first on line 1)"},
		{"syntax", "- address: [\n", "", "f.yaml: expected a YAML or JSON list of endpoints: yaml: line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTargets([]byte(tt.in), "f.yaml")
			if tt.error != "" {
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("error = %v\nwant %q", err, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var parts []string
			for _, tg := range got {
				parts = append(parts, tg.Name+" "+tg.URL()+" "+fmtLabels(tg.Labels))
			}
			if s := strings.Join(parts, ";"); s != tt.want {
				t.Fatalf("got  %s\nwant %s", s, tt.want)
			}
		})
	}
}

func fmtLabels(m map[string]string) string {
	var b strings.Builder
	b.WriteString("map[")
	first := true
	for _, k := range []string{"inference.networking.k8s.io/engine-type", "role", "app"} {
		if v, ok := m[k]; ok {
			if !first {
				b.WriteByte(' ')
			}
			first = false
			b.WriteString(k + ":" + v)
		}
	}
	return b.String() + "]"
}

func TestFileSourceMissingFile(t *testing.T) {
	src := &FileSource{Path: t.TempDir() + "/none.yaml", Poll: 5 * time.Millisecond, Logger: testLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	calls := 0
	go func() { done <- src.Run(ctx, func([]Target) { calls++ }) }()
	eventually(t, "an error", func() bool { return src.Err() != nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if calls != 0 || !strings.Contains(src.Err().Error(), "none.yaml") {
		t.Fatalf("calls = %d, err = %v; want no update and an error naming the file", calls, src.Err())
	}
}

func TestReadTargetsFile(t *testing.T) {
	if _, err := ReadTargetsFile(t.TempDir() + "/none.yaml"); err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Fatalf("err = %v; want one naming the file", err)
	}
}
