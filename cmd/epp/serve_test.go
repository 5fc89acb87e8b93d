package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }

// startEPP runs epp on loopback against n metrics servers and returns its
// addresses, the context cancel (SIGTERM) and the exit-code channel.
func startEPP(t *testing.T, n int, extra ...string) (addrs, context.CancelFunc, *exit, []string, *syncWriter) {
	t.Helper()
	var eps []string
	for i := 0; i < n; i++ {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, metricsPage, 0)
		}))
		t.Cleanup(srv.Close)
		eps = append(eps, strings.TrimPrefix(srv.URL, "http://"))
	}
	args := append([]string{
		"--endpoints", strings.Join(eps, ","), "--bind-address", "127.0.0.1",
		"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0",
		"--refresh-metrics-interval", "20ms",
	}, extra...)
	a, cancel, done, logs := launch(t, args)
	return a, cancel, done, eps, logs
}

// launch runs epp with args until it listens (the test fails if it exits or
// takes 10 s) and returns its addresses, the context cancel (SIGTERM), the
// exit code and its logs; the test's cleanup stops it.
func launch(t *testing.T, args []string) (addrs, context.CancelFunc, *exit, *syncWriter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := &exit{c: make(chan struct{})}
	logs := &syncWriter{w: &bytes.Buffer{}}
	go func() { done.code = run(ctx, args, io.Discard, logs, ready); close(done.c) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			cancel()
			select {
			case <-done.c:
			case <-time.After(10 * time.Second):
			}
		})
		return a, cancel, done, logs
	case <-done.c:
		cancel()
		t.Fatalf("epp exited %d", done.code)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("epp did not start")
	}
	return addrs{}, nil, nil, nil
}

// exit is run's exit code, readable once c is closed.
type exit struct {
	c    chan struct{}
	code int
}

// TestTLSSelfSigned: by default ext_proc is served over TLS with a
// self-signed certificate; a client that skips verification (as gateways
// configured for the EPP do) routes over it.
func TestTLSSelfSigned(t *testing.T) {
	a, _, _, eps, logs := startEPP(t, 1)
	defer func() {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		if strings.Contains(logs.w.(*bytes.Buffer).String(), "picked") {
			t.Errorf("a request was logged at the default level")
		}
	}()
	conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st := sendRequest(t, ctx, conn, `{"model":"m","prompt":"hi"}`)
		r, err := st.Recv()
		cancel()
		if err != nil {
			t.Fatalf("over TLS: %v", err)
		}
		if h := r.GetRequestHeaders(); h != nil {
			for _, o := range h.GetResponse().GetHeaderMutation().GetSetHeaders() {
				if o.GetHeader().GetKey() == "x-gateway-destination-endpoint" && string(o.GetHeader().GetRawValue()) == eps[0] {
					return
				}
			}
			t.Fatalf("no destination header in %v", h)
		}
		if time.Now().After(deadline) { // 503 until the first scrape
			t.Fatalf("no route over TLS: %v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCertPath serves the pair from --cert-path, and a directory without it
// fails at start with a message naming the files.
func TestCertPath(t *testing.T) {
	dir := t.TempDir()
	pair, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Certificate[0]}), 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600)
	a, _, _, _, _ := startEPP(t, 1, "--cert-path", dir)
	var seen []byte
	conf := &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
		seen = cs.PeerCertificates[0].Raw
		return nil
	}}
	c, err := tls.Dial("tcp", a.grpc, conf)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bytes.Equal(seen, pair.Certificate[0]) {
		t.Error("epp did not serve the certificate from --cert-path")
	}

	var errb bytes.Buffer
	code := run(context.Background(), []string{"--endpoints", "127.0.0.1:1", "--cert-path", t.TempDir(), "--bind-address", "127.0.0.1",
		"--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0"}, io.Discard, &errb, nil)
	if code != 1 || !strings.Contains(errb.String(), "expected tls.crt and tls.key") {
		t.Errorf("empty --cert-path: exit %d, %q", code, errb.String())
	}
}

// TestGPUTelemetryWired: a config with a gpu-metrics-source starts the GPU
// enricher (its start-up line names the source) and still routes.
func TestGPUTelemetryWired(t *testing.T) {
	cfg := `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: gpu-metrics-source
  parameters: {urlTemplate: "http://{ip}:{port}/gpu/metrics", interval: 100ms}
- type: gpu-headroom-scorer
- type: capacity-queue-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: gpu-headroom-scorer
  - pluginRef: capacity-queue-scorer
dataLayer:
  sources:
  - pluginRef: gpu-metrics-source
`
	_, _, _, _, logs := startEPP(t, 2, "--config-text", cfg)
	logs.mu.Lock()
	out := logs.w.(*bytes.Buffer).String()
	logs.mu.Unlock()
	if !strings.Contains(out, "gpu telemetry") || !strings.Contains(out, "{ip}:{port}/gpu/metrics") {
		t.Errorf("no GPU telemetry start-up line in the logs:\n%s", out)
	}
}
