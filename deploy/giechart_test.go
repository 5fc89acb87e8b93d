package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// TestGIEChartWithOurImage renders GIE v1.5.0's own inferencepool chart (from
// the module cache) for a vLLM pool, as a user swapping only the image would
// deploy it, and runs epp with exactly that Deployment's arguments and
// ConfigMap (--check-config): GIE's two-argument boolean flags must parse,
// and the probes must ask for health services epp serves.
func TestGIEChartWithOurImage(t *testing.T) {
	t.Parallel()
	epp := eppBinary(t)
	src := filepath.Join(moduleDir(t, "v1.5.0"), "config", "charts")
	charts := filepath.Join(t.TempDir(), "charts")
	// The module cache is read-only and helm writes the dependency (epplib)
	// into the chart: work on a copy.
	if out, err := exec.Command("cp", "-r", src, charts).CombinedOutput(); err != nil {
		t.Fatalf("copying GIE's charts: %v: %s", err, out)
	}
	if out, err := exec.Command("chmod", "-R", "u+w", charts).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	h := helm(t)
	home := filepath.Join(t.TempDir(), "helm-home")
	env := kubetest.HelmEnv(home)
	chart := filepath.Join(charts, "inferencepool")
	run(t, time.Minute, env, h, "dependency", "build", chart)
	out := run(t, time.Minute, env, h, "template", "vllm", chart, "--namespace", "llm",
		"--set", "inferencePool.modelServers.matchLabels.app=vllm",
		"--set", "inferenceExtension.flags.health-checking=true", // a boolean, rendered as two arguments
		"--set", "inferenceExtension.flags.enable-pprof=false")
	objs := decode(t, out)
	d := deployment(t, objs, "vllm-epp")
	var args []string
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "epp" {
			continue
		}
		args = c.Args
		for what, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if pr == nil || pr.GRPC == nil || pr.GRPC.Service == nil {
				t.Errorf("GIE's %s probe is not a gRPC probe with a service: %+v", what, pr)
				continue
			}
			if s := *pr.GRPC.Service; s != "inference-extension" && s != "liveness" && s != "readiness" {
				t.Errorf("GIE's %s probe asks for health service %q, which epp does not serve", what, s)
			}
		}
	}
	if len(args) == 0 {
		t.Fatalf("no epp container in GIE's rendered Deployment:\n%s", inventory(objs))
	}
	for i, a := range args {
		if a == "--config-file" && i+1 < len(args) {
			key := strings.TrimPrefix(args[i+1], "/config/")
			cm := find(t, objs, "ConfigMap", "vllm-epp")
			cfg, _ := cm.Object["data"].(map[string]any)[key].(string)
			p := filepath.Join(t.TempDir(), key)
			if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			args[i+1] = p
		}
	}
	if !strings.Contains(strings.Join(args, " "), "--health-checking true") {
		t.Fatalf("GIE's chart no longer renders a boolean flag as two arguments (%q); update this test", args)
	}
	if b, err := runErr(30*time.Second, nil, epp, append(args, "--check-config")...); err != nil {
		t.Fatalf("epp refused GIE's chart arguments %q: %v\n%s", args, err, b)
	}
}
