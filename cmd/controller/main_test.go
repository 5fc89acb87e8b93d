package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fastepp/fastepp/controller"
	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
	"github.com/fastepp/fastepp/internal/kubetest"
)

func TestFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"help", []string{"--help"}, 0, "Usage: controller", ""},
		{"version", []string{"--version"}, 0, "controller ", ""},
		{"unknown flag", []string{"--nope"}, 2, "", "flag provided but not defined"},
		{"stray argument", []string{"extra"}, 2, "", "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb, nil)
			all := out.String() + errb.String()
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(all, tc.err) {
				t.Errorf("expected exit %d, stdout containing %q and output containing %q; found exit %d, stdout %q, stderr %q",
					tc.code, tc.out, tc.err, code, out.String(), errb.String())
			}
		})
	}
}

// TestRunOnAPIServer runs the binary's run (leader election, metrics,
// probes, the controller) against a real API server: a ModelRoute gets its
// picker Deployment with --epp-image, and /metrics counts the reconciles.
func TestRunOnAPIServer(t *testing.T) {
	gw, err := kubetest.ModuleDir("sigs.k8s.io/gateway-api", "")
	if err != nil {
		t.Fatal(err)
	}
	env := kubetest.StartWith(t, kubetest.Options{ExtraCRDs: []string{
		filepath.Join("..", "..", "deploy", "controller", "crds"),
		filepath.Join(gw, "config", "crd", "standard", "gateway.networking.k8s.io_httproutes.yaml"),
		filepath.Join(gw, "config", "crd", "standard", "gateway.networking.k8s.io_gateways.yaml"),
	}})
	scheme, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace(t)
	metrics, probes := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--leader-election-namespace=" + ns, "--metrics-bind-address=" + metrics,
			"--health-probe-bind-address=" + probes, "--epp-image=example.com/epp:run"}, io.Discard, &logs, env.Config)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("run: expected exit 0 after cancel, found %d\n%s", code, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("run: still running 30s after cancel")
		}
	})

	mr := &v1alpha1.ModelRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m"},
		Spec: v1alpha1.ModelRouteSpec{Model: "m", Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "m"}},
			TargetPorts: []v1alpha1.Port{{Number: 8000}}},
	}
	if err := c.Create(ctx, mr); err != nil {
		t.Fatal(err)
	}
	kubetest.Eventually(t, "picker Deployment with --epp-image", func() error {
		d := &appsv1.Deployment{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "m-epp"}, d); err != nil {
			return err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "example.com/epp:run" {
			return fmt.Errorf("expected image example.com/epp:run, found %s", img)
		}
		return nil
	})
	kubetest.Eventually(t, "/readyz", func() error { return get("http://"+probes+"/readyz", "ok") })
	kubetest.Eventually(t, "reconcile metrics", func() error {
		return get("http://"+metrics+"/metrics", `controller_runtime_reconcile_total{controller="modelroute",result="success"}`)
	})
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(url, want string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
		return fmt.Errorf("GET %s: expected 200 with %q, found %d", url, want, resp.StatusCode)
	}
	return nil
}
