package deploy_test

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestStaticBinary builds epp as the image does (CGO_ENABLED=0, -trimpath,
// stripped) and checks that it needs no libc: no program interpreter
// (PT_INTERP) and no shared libraries (DT_NEEDED), so it runs on distroless
// static or scratch. Then it runs it.
func TestStaticBinary(t *testing.T) {
	t.Parallel()
	p := eppBinary(t)
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s has a PT_INTERP program header: it needs a dynamic loader (and libc)", p)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v; expected none", p, libs)
	}
	out := strings.TrimSpace(string(run(t, 30*time.Second, nil, p, "--version")))
	if !strings.HasPrefix(out, "epp "+eppVersion+" ") {
		t.Errorf("epp --version printed %q, expected %q", out, "epp "+eppVersion+" (...)")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %.1f MB, static (no PT_INTERP, no DT_NEEDED)", out, float64(st.Size())/1e6)
}

// configFile writes a config from a rendered ConfigMap to a file.
func configFile(t *testing.T, objs []*unstructured.Unstructured, key string) string {
	t.Helper()
	cfg, ok, _ := unstructured.NestedString(find(t, objs, "ConfigMap", eppName).Object, "data", key)
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", eppName, key)
	}
	p := filepath.Join(t.TempDir(), key)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPickerAcceptsDeployment runs the epp binary with exactly the arguments
// the plain Deployment and the chart give it (the ConfigMap's config in place
// of /config, $(NAMESPACE) expanded as the kubelet does) and --check-config:
// every flag must parse, the flags must fit together and the config must
// load. The chart is rendered for every model-server type it accepts.
func TestPickerAcceptsDeployment(t *testing.T) {
	t.Parallel()
	epp := eppBinary(t)
	const ns = "llm"
	manifests := map[string][]byte{}
	for _, f := range []string{"deployment.yaml", "configmap.yaml"} {
		b, err := os.ReadFile(filepath.Join("manifests", f))
		if err != nil {
			t.Fatal(err)
		}
		manifests[f] = b
	}
	type source struct {
		name string
		objs func(t *testing.T) []*unstructured.Unstructured
	}
	cases := []source{
		{"plain manifests", func(t *testing.T) []*unstructured.Unstructured {
			return decode(t, append(append(manifests["deployment.yaml"], "\n---\n"...), manifests["configmap.yaml"]...))
		}},
	}
	for _, v := range []struct{ name, values string }{
		{"chart vllm", baseValues},
		{"chart sglang", baseValues + "  modelServerType: sglang\n"},
		{"chart triton-tensorrt-llm", baseValues + "  modelServerType: triton-tensorrt-llm\n"},
		{"chart trtllm-serve, openai-parser", baseValues + "  modelServerType: trtllm-serve\n  parser: openai-parser\n"},
		{"chart HA, TLS, tracing, no metrics auth", baseValues + `inferenceExtension:
  replicas: 3
  tls: {secretName: epp-tls}
  tracing: {enabled: true}
  flags: {v: 4, enable-pprof: true, max-request-body-bytes: 33554432}
  monitoring: {prometheus: {auth: {enabled: false}}}
  pluginsConfigFile: custom.yaml
  pluginsCustomConfig:
    custom.yaml: |
      apiVersion: inference.networking.x-k8s.io/v1alpha1
      kind: EndpointPickerConfig
      plugins:
      - type: queue-scorer
      schedulingProfiles:
      - name: default
        plugins:
        - pluginRef: queue-scorer
`},
	} {
		cases = append(cases, source{v.name, func(t *testing.T) []*unstructured.Unstructured {
			return decode(t, helmTemplate(t, poolName, ns, v.values))
		}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := c.objs(t)
			d := deployment(t, objs, eppName)
			var args []string
			for _, ctr := range d.Spec.Template.Spec.Containers {
				if ctr.Name == "epp" {
					args = ctr.Args
				}
			}
			var cfgKey string
			for i, a := range args {
				switch {
				case a == "--config-file" && i+1 < len(args):
					cfgKey = strings.TrimPrefix(args[i+1], "/config/")
					args[i+1] = configFile(t, objs, cfgKey)
				case a == "$(NAMESPACE)":
					args[i] = ns
				}
			}
			if cfgKey == "" {
				t.Fatalf("args %q: no --config-file", args)
			}
			out, err := runErr(30*time.Second, []string{"NAMESPACE=" + ns}, epp, append(args, "--check-config")...)
			if err != nil {
				t.Fatalf("epp refuses the Deployment's arguments or config %s: %v", cfgKey, err)
			}
			if !strings.Contains(string(out), "kind: EndpointPickerConfig") {
				t.Errorf("--check-config printed no effective config:\n%s", out)
			}
		})
	}
}
