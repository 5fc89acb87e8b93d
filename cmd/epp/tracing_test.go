package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// collector is an OTLP trace collector on loopback that records span names.
type collector struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string
	svc   []string
}

func (c *collector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				c.svc = append(c.svc, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				c.spans = append(c.spans, sp.GetName())
			}
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// TestTracingExportsOTLP: with --tracing and an OTLP endpoint in the
// environment, every sampled request's span reaches the collector over a real
// gRPC stream, at the latest when epp shuts down.
func TestTracingExportsOTLP(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	gs := grpc.NewServer()
	coltrace.RegisterTraceServiceServer(gs, col)
	go gs.Serve(lis)
	defer gs.Stop()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+lis.Addr().String())
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_SERVICE_NAME", "epp-under-test")

	a, cancel, done, _, _ := startEPP(t, 2, "--secure-serving=false", "--tracing")
	waitReadiness(t, a.health)
	conn, err := grpc.NewClient(a.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := 0; i < 3; i++ {
		routeOnce(t, conn, `{"model":"m","prompt":"hello"}`)
	}
	cancel() // shutdown flushes the batch
	select {
	case <-done.c:
	case <-time.After(10 * time.Second):
		t.Fatal("epp did not stop")
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	n := 0
	for _, s := range col.spans {
		if s == "gateway.request" {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("collector got spans %v, want 3 gateway.request", col.spans)
	}
	if len(col.svc) == 0 || col.svc[0] != "epp-under-test" {
		t.Errorf("service.name %v, want epp-under-test", col.svc)
	}
}

func TestSamplerFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name, arg, want, err string
	}{
		{"", "", "parentbased_traceidratio 0.1", ""},
		{"parentbased_traceidratio", "0.5", "parentbased_traceidratio 0.5", ""},
		{"always_on", "", "always_on", ""},
		{"traceidratio", "2", "", "expected a ratio in 0..1"},
		{"jaeger_remote", "", "", `found "jaeger_remote"`},
	} {
		_, desc, err := samplerFromEnv(tc.name, tc.arg)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s %s: err %v, want %q", tc.name, tc.arg, err, tc.err)
		case tc.err == "" && (err != nil || desc != tc.want):
			t.Errorf("%s %s: %q, %v; want %q", tc.name, tc.arg, desc, err, tc.want)
		}
	}
}

// waitReadiness waits (up to 10 s) for epp's readiness to be SERVING: the
// pool has endpoints, so a request is routed rather than answered 503.
func waitReadiness(t *testing.T, healthAddr string) {
	t.Helper()
	hc, err := grpc.NewClient(healthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := healthpb.NewHealthClient(hc).Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
		cancel()
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness never SERVING: %v, %v", r, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
