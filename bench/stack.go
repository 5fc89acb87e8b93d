package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/extproc"
	"github.com/fastepp/fastepp/gateway"
	"github.com/fastepp/fastepp/scheduler"
	"github.com/fastepp/fastepp/simulator"
)

// Stack is one strategy's running system: a fresh simulated fleet, the
// strategy's picker (if any) and the gateway in front, all on 127.0.0.1.
type Stack struct {
	Strategy Strategy
	Fleet    *simulator.Fleet
	// Endpoints are the servers' ip:port, in fleet order.
	Endpoints []string
	// Names are the servers' names (sim-0, ...), in fleet order.
	Names []string
	// EPP is the ext_proc address the gateway dials ("" in direct mode).
	EPP string
	// URL is the gateway's base URL (http://127.0.0.1:PORT).
	URL string

	pool    *endpoints.Pool
	gpu     *endpoints.GPUEnricher
	grpcSrv *grpc.Server
	gw      *gateway.Gateway
	httpSrv *http.Server
}

// StackOptions tune StartStack.
type StackOptions struct {
	// Seed seeds the simulated servers (ids, generated text).
	Seed uint64
	// BasePort overrides the scenario's fleet.base_port when > 0.
	BasePort int
	// Listen is the gateway's address (default 127.0.0.1:0).
	Listen string
	// ExternalTLS dials an external picker over TLS (unverified).
	ExternalTLS bool
	// Logger receives epp's and the gateway's state changes (nil: discard).
	Logger *slog.Logger
}

// StartStack starts a fresh fleet for sc, the strategy's picker and the
// gateway. It returns when epp (if any) has scraped every server once.
func StartStack(ctx context.Context, sc *Scenario, st Strategy, opt StackOptions) (_ *Stack, err error) {
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	basePort := sc.BasePort
	if opt.BasePort > 0 {
		basePort = opt.BasePort
	}
	if st.Kind == KindExternal && basePort == 0 {
		return nil, fmt.Errorf("strategy %s: an external picker must know the servers' addresses before the run: pin the fleet with fleet.base_port in the scenario or --base-port", st.Name)
	}
	cfgs, err := sc.ServerConfigs(opt.Seed)
	if err != nil {
		return nil, err
	}
	s := &Stack{Strategy: st}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.Fleet, err = simulator.StartFleet(cfgs, basePort); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	for _, srv := range s.Fleet.Servers {
		s.Endpoints = append(s.Endpoints, srv.Addr())
		s.Names = append(s.Names, srv.Config().Name)
	}

	gcfg := gateway.Config{Logger: log}
	switch st.Kind {
	case KindDirect:
		gcfg.Direct, gcfg.Balance = s.Endpoints, st.Balance
	case KindExternal:
		s.EPP = st.Address
		gcfg.EPP, gcfg.EPPTLS = st.Address, opt.ExternalTLS
		if hint := gateway.ProbeEPP(ctx, st.Address, opt.ExternalTLS); hint != "" {
			return nil, fmt.Errorf("strategy %s: %s", st.Name, hint)
		}
	case KindEPP:
		if err := s.startEPP(ctx, sc, st, log); err != nil {
			return nil, fmt.Errorf("strategy %s: epp: %w", st.Name, err)
		}
		gcfg.EPP = s.EPP
	default:
		return nil, fmt.Errorf("strategy %s: unknown kind %q", st.Name, st.Kind)
	}
	if s.gw, err = gateway.New(gcfg); err != nil {
		return nil, err
	}
	listen := opt.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen %s: %w", listen, err)
	}
	s.httpSrv = &http.Server{Handler: s.gw, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() { _ = s.httpSrv.Serve(lis) }()
	s.URL = "http://" + lis.Addr().String()
	return s, nil
}

// startEPP wires epp as cmd/epp does: config.Load, scheduler.New,
// endpoints.NewPool with the config's scrape settings (and its GPU enricher
// when the config has a gpu-metrics-source), extproc.New, and a
// gRPC server with extproc.GRPCServerOptions (plaintext, 127.0.0.1).
func (s *Stack) startEPP(ctx context.Context, sc *Scenario, st Strategy, log *slog.Logger) error {
	l, err := loadPlan(st)
	if err != nil {
		return err
	}
	src, err := endpoints.ParseStatic(strings.Join(s.Endpoints, ","))
	if err != nil {
		return err
	}
	sched := scheduler.New(l.Plan)
	var enrichers []endpoints.Enricher
	if l.GPU != nil {
		if s.gpu, err = endpoints.NewGPUEnricher(*l.GPU, nil, log); err != nil {
			return err
		}
		enrichers = append(enrichers, s.gpu)
	}
	s.pool = endpoints.NewPool(sched, src, endpoints.Options{
		RefreshInterval:    sc.EPP.RefreshInterval,
		StalenessThreshold: sc.EPP.StalenessThreshold,
		Scrape:             l.Scrape,
		Enrichers:          enrichers,
		Logger:             log,
	})
	xp, err := extproc.New(sched, extproc.Options{Logger: log})
	if err != nil {
		return err
	}
	s.grpcSrv = grpc.NewServer(extproc.GRPCServerOptions(0)...)
	xp.Register(s.grpcSrv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = s.grpcSrv.Serve(lis) }()
	s.EPP = lis.Addr().String()
	// Ready when every server has been scraped once and is healthy, as
	// run-local.sh waited for inference_pool_ready_pods.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ready := 0
		for _, e := range s.pool.EndpointStats() {
			if e.Healthy && e.Scrapes > e.ScrapeErrors && e.Scrapes > 0 {
				ready++
			}
		}
		if ready == len(s.Endpoints) {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("expected every server scraped within 10s, found %d of %d ready", ready, len(s.Endpoints))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// loadPlan decodes the strategy's EndpointPickerConfig as epp does.
func loadPlan(st Strategy) (*config.Loaded, error) {
	l, err := config.Load(st.EPPConfig, config.NewRegistry())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", st.ConfigSource, err)
	}
	return l, nil
}

// Close stops the gateway, epp and the fleet.
func (s *Stack) Close() {
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			s.httpSrv.Close()
		}
		cancel()
	}
	if s.gw != nil {
		s.gw.Close()
	}
	if s.grpcSrv != nil {
		done := make(chan struct{})
		go func() { s.grpcSrv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.grpcSrv.Stop()
		}
	}
	if s.pool != nil {
		_ = s.pool.Close()
	}
	if s.gpu != nil {
		_ = s.gpu.Close()
	}
	if s.Fleet != nil {
		s.Fleet.Close()
	}
}

// ServerCounters are one server's cumulative counters, read from its engine.
type ServerCounters struct {
	Requests      uint64 // finished requests (any reason)
	PrefixQueries uint64 // prompt tokens looked up in the prefix cache
	PrefixHits    uint64 // of which found there
	Preemptions   uint64
	GenTokens     uint64
	Lag           time.Duration // real-time driver behind the model
}

// Counters reads every server's counters, in fleet order.
func (s *Stack) Counters() []ServerCounters {
	out := make([]ServerCounters, len(s.Fleet.Servers))
	for i, srv := range s.Fleet.Servers {
		st := srv.Engine().Stats()
		var n uint64
		for _, v := range st.Success {
			n += v
		}
		out[i] = ServerCounters{Requests: n, PrefixQueries: st.PrefixQueries, PrefixHits: st.PrefixHits,
			Preemptions: st.Preemptions, GenTokens: st.GenerationTokens, Lag: st.Lag}
	}
	return out
}
