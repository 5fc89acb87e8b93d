package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/extproc"
	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/version"
)

// addrs are the bound listener addresses (ports may be 0 in tests).
type addrs struct{ grpc, health, metrics string }

// healthServices are the names readiness answers for (GIE's probes use
// "readiness").
var healthServices = []string{"", "readiness", extprocHealthService}

// gieChartHealthService is what GIE's inferencepool chart probes, for
// liveness and readiness alike, with one replica. GIE answers any name
// SERVING once the pool has synced, endpoints or not; so does epp for this
// name: a liveness probe must not restart the picker while the model
// servers are still loading.
const gieChartHealthService = "inference-extension"

func loadConfig(o *options) (*config.Loaded, error) {
	var data []byte
	switch {
	case o.configFile != "":
		b, err := os.ReadFile(o.configFile)
		if err != nil {
			return nil, fmt.Errorf("--config-file: %w", err)
		}
		data = b
	case o.configText != "":
		data = []byte(o.configText)
	}
	l, err := config.Load(data, config.NewRegistry())
	if err != nil {
		if o.configFile != "" {
			return nil, fmt.Errorf("%s: %w", o.configFile, err)
		}
		return nil, err
	}
	return l, nil
}

// source builds the pool source from the flags; an endpoints file's engine
// labels are checked against sc's engines.
func source(o *options, sc endpoints.ScrapeConfig, log *slog.Logger) (endpoints.Source, error) {
	if o.endpoints != "" {
		return endpoints.ParseStatic(o.endpoints)
	}
	if _, err := sc.ReadTargetsFile(o.endpointsFile); err != nil {
		return nil, fmt.Errorf("--endpoints-file: %w", err)
	}
	return &endpoints.FileSource{Path: o.endpointsFile, Logger: log, Scrape: sc}, nil
}

// extprocServer is what serves the ext_proc port: a *grpc.Server or an
// *extproc.Direct (--extproc-transport).
type extprocServer interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// extprocHealthService is the ext_proc service name gRPC health reports.
const extprocHealthService = "envoy.service.ext_proc.v3.ExternalProcessor"

func serve(ctx context.Context, o *options, l *config.Loaded, log *slog.Logger, ready chan<- addrs) error {
	// The config's data-layer parameters override the
	// --model-server-metrics-* flags, which override GIE's defaults.
	sc, err := endpoints.ScrapeConfigOver(o.scrapeBase(), l.DataLayer)
	if err != nil {
		return err
	}
	log.Info("epp starting", "version", version.String("epp"))
	var (
		src endpoints.Source
		km  *kubeMode
	)
	if o.poolName != "" || o.endpointSelector != "" {
		km, err = newKubeMode(ctx, o, log)
		if err != nil {
			return err
		}
		src = km.src
		kctx, stopKube := context.WithCancel(ctx)
		defer stopKube() // after the servers stop: the lease is released last
		km.start(kctx, log)
		log.Info("kubernetes mode", "apiServer", km.cfg.Host, "namespace", o.poolNamespace, "pool", o.poolName,
			"selector", o.endpointSelector, "leaderElection", o.haLeaderElection, "metricsAuth", o.metricsEndpointAuth)
	} else if src, err = source(o, sc, log); err != nil {
		return err
	}
	var tracer trace.Tracer
	if o.tracing {
		tr, err := initTracing(ctx, os.LookupEnv, o.stdout, log)
		if err != nil {
			return fmt.Errorf("--tracing: %w", err)
		}
		defer func() {
			if err := tr.shutdown(context.Background()); err != nil {
				log.Warn("tracing: flushing spans at shutdown failed", "err", err)
			}
		}()
		tracer = tr.tracer
		log.Info("tracing", "exporter", tr.what)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	sched := scheduler.New(l.Plan)
	pm := newPoolMetrics(reg)
	pm.PoolName = o.poolName
	var enrichers []endpoints.Enricher
	if l.GPU != nil {
		// GPU telemetry (gpu-metrics-source): scraped on its own goroutine,
		// copied into each snapshot by the pool's publisher.
		g, err := endpoints.NewGPUEnricher(*l.GPU, nil, log)
		if err != nil {
			return err
		}
		defer g.Close()
		enrichers = append(enrichers, g)
		log.Info("gpu telemetry", "url", l.GPU.URL, "urlTemplate", l.GPU.URLTemplate, "interval", l.GPU.Interval, "stalenessThreshold", l.GPU.StalenessThreshold)
	}
	pool := endpoints.NewPool(sched, src, endpoints.Options{
		RefreshInterval:    o.refreshMetricsInterval,
		StalenessThreshold: o.metricsStalenessThreshold,
		ScrapeTimeout:      o.metricsScrapeTimeout,
		Scrape:             sc,
		Enrichers:          enrichers,
		Logger:             log,
		OnScrape:           pm.onScrape,
	})
	defer pool.Close()
	pm.register(reg, pool, l.Plan)

	priority := o.priority
	if km != nil {
		priority = km.priority(o.priority)
	}
	idle := o.requestIdleTimeout
	if idle == 0 {
		idle = -1 // --request-idle-timeout 0 disables the limit (extproc: negative)
	}
	xp, err := extproc.New(sched, extproc.Options{
		BodyMode:            o.bodyMode,
		MaxBodyBytes:        o.maxRequestBodySize,
		RequestIdleTimeout:  idle,
		MaxBufferedBytes:    o.maxBufferedRequestBytes,
		Logger:              log,
		Models:              o.modelList(),
		DisableSubsetFilter: o.disableSubsetFilter,
		Registerer:          reg,
		Priority:            priority,
		Tracer:              tracer,
	})
	if err != nil {
		return err
	}

	gopts := extproc.GRPCServerOptions(o.maxRequestBodySize)
	if o.enableCertReload && (!o.secureServing || o.certPath == "") {
		log.Warn("--enable-cert-reload has no effect without --secure-serving and --cert-path (as in GIE)")
	}
	var tc *tls.Config
	if o.secureServing {
		tlsCtx, stopTLS := context.WithCancel(ctx) // ends the certificate reloader with serve
		defer stopTLS()
		tc, err = serverTLS(tlsCtx, o.certPath, o.enableCertReload, log)
		if err != nil {
			return err
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tc)))
	}
	// --health-checking: gRPC health on the ext_proc port as well, as GIE
	// does: "" and the ext_proc service SERVING until shutdown starts.
	var xpHealth *health.Server
	if o.healthChecking {
		xpHealth = health.NewServer()
		xpHealth.SetServingStatus(extprocHealthService, healthpb.HealthCheckResponse_SERVING)
	}
	// gs serves the ext_proc port: grpc-go, or with --extproc-transport
	// direct extproc's own HTTP/2 transport (same TLS config, health
	// server and receive limit; Serve, GracefulStop and Stop alike).
	var gs extprocServer
	switch o.extprocTransport {
	case transportDirect:
		gs = xp.NewDirect(extproc.DirectOptions{
			TLS:    tc,
			Health: xpHealth, // nil without --health-checking: no health on this port
			// 0: the server's MaxBodyBytes (--max-request-body-bytes) plus
			// 1 MiB, the limit GRPCServerOptions gives grpc-go.
			MaxRecvMsgSize: 0,
		})
	default:
		g := grpc.NewServer(gopts...)
		xp.Register(g)
		if xpHealth != nil {
			healthpb.RegisterHealthServer(g, xpHealth)
		}
		gs = g
	}

	hs := health.NewServer()
	for _, s := range healthServices {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	hs.SetServingStatus(gieChartHealthService, healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus("liveness", healthpb.HealthCheckResponse_SERVING)
	hg := grpc.NewServer()
	healthpb.RegisterHealthServer(hg, hs)

	gl, err := net.Listen("tcp", net.JoinHostPort(o.bindAddress, strconv.Itoa(o.grpcPort)))
	if err != nil {
		return fmt.Errorf("--grpc-port %d: %w", o.grpcPort, err)
	}
	hl, err := net.Listen("tcp", net.JoinHostPort(o.bindAddress, strconv.Itoa(o.grpcHealthPort)))
	if err != nil {
		gl.Close()
		return fmt.Errorf("--grpc-health-port %d: %w", o.grpcHealthPort, err)
	}
	ml, err := net.Listen("tcp", net.JoinHostPort(o.bindAddress, strconv.Itoa(o.metricsPort)))
	if err != nil {
		gl.Close()
		hl.Close()
		return fmt.Errorf("--metrics-port %d: %w", o.metricsPort, err)
	}
	mux := http.NewServeMux()
	var metricsHandler http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if km != nil && km.metrics != nil {
		metricsHandler = km.metrics(metricsHandler)
	}
	mux.Handle("/metrics", metricsHandler)
	if o.enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 3)
	go func() { errc <- gs.Serve(gl) }()
	go func() { errc <- hg.Serve(hl) }()
	go func() {
		if err := hsrv.Serve(ml); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	// Readiness follows the pool: SERVING while it has endpoints (in
	// Kubernetes mode: once listed, while the InferencePool exists, and only
	// on the elected leader with --ha-enable-leader-election).
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	go func() {
		state, synced := healthpb.HealthCheckResponse_NOT_SERVING, false
		t := time.NewTicker(min(o.refreshMetricsInterval, 250*time.Millisecond))
		defer t.Stop()
		for {
			want := healthpb.HealthCheckResponse_NOT_SERVING
			if pool.Ready() && pool.Len() > 0 && (km == nil || km.ready()) {
				want = healthpb.HealthCheckResponse_SERVING
			}
			if now := km == nil || km.synced(); now != synced {
				synced = now
				st := healthpb.HealthCheckResponse_NOT_SERVING
				if now {
					st = healthpb.HealthCheckResponse_SERVING
				}
				hs.SetServingStatus(gieChartHealthService, st)
			}
			if want != state {
				state = want
				for _, s := range healthServices {
					hs.SetServingStatus(s, want)
				}
				log.Info("readiness changed", "serving", want == healthpb.HealthCheckResponse_SERVING, "endpoints", pool.Len())
			}
			select {
			case <-readyCtx.Done():
				return
			case <-t.C:
			}
		}
	}()
	log.Info("epp serving", "grpc", gl.Addr().String(), "health", hl.Addr().String(), "metrics", ml.Addr().String(),
		"tls", o.secureServing, "transport", o.extprocTransport, "profiles", len(l.Plan.Profiles), "bodyMode", o.bodyMode.String())
	if ready != nil {
		ready <- addrs{gl.Addr().String(), hl.Addr().String(), ml.Addr().String()}
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new streams, finishing open ones", "grace", o.gracePeriod, "open", xp.Open())
	case serveErr = <-errc:
	}
	stopReady()
	hs.Shutdown() // every service NOT_SERVING: the gateway stops sending
	if xpHealth != nil {
		xpHealth.Shutdown()
	}
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.gracePeriod):
		log.Warn("grace period over; closing open streams", "open", xp.Open())
		gs.Stop()
		<-done
	}
	hg.Stop()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	return serveErr
}
