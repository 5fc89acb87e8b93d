package endpoints

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// Defaults of Options (GIE's flag defaults where GIE has the flag).
const (
	DefaultRefreshInterval    = 50 * time.Millisecond // --refresh-metrics-interval
	DefaultStalenessThreshold = 2 * time.Second       // --metrics-staleness-threshold
	DefaultScrapeTimeout      = time.Second
	DefaultFailureThreshold   = 3
)

// Options configure a Pool. The zero value uses the defaults above.
type Options struct {
	// RefreshInterval is the scrape period per endpoint, and the least time
	// between two snapshot rebuilds (membership changes rebuild at once).
	RefreshInterval time.Duration
	// StalenessThreshold: metrics older than this leave scoring (unless every
	// endpoint is stale: then all are used).
	StalenessThreshold time.Duration
	// ScrapeTimeout bounds one scrape (connect + headers + body); epp's
	// --metrics-scrape-timeout.
	ScrapeTimeout time.Duration
	// FailureThreshold is how many consecutive failed scrapes mark an
	// endpoint unhealthy (out of scoring); one success brings it back.
	FailureThreshold int
	// Scrape says where metrics pages are and which engine's names to read
	// (the config's data-layer plugins; zero value: DefaultScrapeConfig).
	Scrape ScrapeConfig
	// Client overrides the scrape client. By default (nil) plain-http pages
	// are fetched over each scraper's own keep-alive connection (rawGet: no
	// extra goroutines; the response parsed by http.ReadResponse) and https
	// pages, user-info URLs and redirects by NewHTTPClient(ScrapeTimeout,
	// Scrape.InsecureSkipVerify); a Client given here reads every page.
	Client *http.Client
	// Enrichers run on the publisher goroutine on every snapshot rebuild, in
	// order, before the snapshot is built: the place where per-endpoint data
	// other than the model server's metrics (GPU telemetry) enters the
	// snapshot. See Enricher.
	Enrichers []Enricher
	// Logger receives state changes (default slog.Default()); nothing is
	// logged per scrape.
	Logger *slog.Logger
	// OnScrape, when set, is called after every scrape from the endpoint's
	// scraper goroutine (for a duration histogram and error counter). It
	// must be quick and must not call back into the Pool.
	OnScrape func(h *scheduler.Handle, took time.Duration, err error)
}

// Enricher adds per-endpoint data to the states a snapshot is built from.
// Enrich is called from the pool's publisher goroutine only (never
// concurrently with itself), with one state per endpoint in pool order; it
// may set any field of the states (and may mark an endpoint unhealthy) but
// must not keep the slice. It runs on every rebuild (up to once per refresh
// interval), so it reads data its own goroutine gathered and must not block.
type Enricher interface {
	Enrich(states []scheduler.EndpointState, now time.Time)
}

func (o *Options) defaults() {
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.StalenessThreshold <= 0 {
		o.StalenessThreshold = DefaultStalenessThreshold
	}
	if o.ScrapeTimeout <= 0 {
		o.ScrapeTimeout = DefaultScrapeTimeout
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = DefaultFailureThreshold
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Scrape = o.Scrape.withDefaults()
}

// Stats summarises the last published snapshot (for the pool gauges).
type Stats struct {
	Endpoints int // endpoints in the pool
	Ready     int // endpoints in scoring: healthy with fresh metrics
	// AllStale: no endpoint is ready, so scoring falls back to all of them.
	AllStale bool
	// AvgKVUsage and AvgWaiting average the scored endpoints' KV usage
	// (0..1) and queue length (0 when the pool is empty).
	AvgKVUsage float64
	AvgWaiting float64
	// Seq and BuiltAt identify the snapshot.
	Seq     uint64
	BuiltAt time.Time
}

// EndpointStat is one endpoint's scrape record.
type EndpointStat struct {
	Handle       *scheduler.Handle
	Healthy      bool   // false after FailureThreshold consecutive failures
	Scrapes      uint64 // scrapes attempted
	ScrapeErrors uint64 // scrapes failed
	LastError    string // "" after a success
	LastScrape   time.Duration
	Metrics      scheduler.Metrics // last good scrape
}

// member is one endpoint of the pool.
type member struct {
	h      *scheduler.Handle
	target Target
	cancel context.CancelFunc

	// guarded by Pool.mu
	m       scheduler.Metrics
	healthy bool
	fails   int
	lastErr error

	scrapes, scrapeErrors atomic.Uint64
	lastTook              atomic.Int64
}

// Pool owns the endpoints' handles and scrapers and publishes snapshots to a
// scheduler. Create it with NewPool; Close stops every goroutine.
type Pool struct {
	opt   Options
	sched *scheduler.Scheduler
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu      sync.Mutex
	members []*member // source order
	byAddr  map[netip.AddrPort]*member
	dirty   bool // a scrape landed since the last rebuild

	membership chan struct{} // membership changed: rebuild now
	stats      atomic.Pointer[Stats]
	ready      atomic.Bool
	readyCh    chan struct{}
	readyOnce  sync.Once
	closeOnce  sync.Once
	ownClient  bool

	engines    *engineTable // Scrape's engines, compiled once
	enginesErr error        // why Scrape.Engines are invalid (every scrape fails with it)
}

// NewPool starts discovery from src, a scraper per endpoint, and a publisher
// that keeps sched's snapshot current. Call Close to stop them.
func NewPool(sched *scheduler.Scheduler, src Source, opt Options) *Pool {
	opt.defaults()
	own := opt.Client == nil
	if own {
		opt.Client = NewHTTPClient(opt.ScrapeTimeout, opt.Scrape.InsecureSkipVerify)
	}
	ctx, stop := context.WithCancel(context.Background())
	p := &Pool{
		opt: opt, sched: sched, ctx: ctx, stop: stop,
		byAddr:     map[netip.AddrPort]*member{},
		membership: make(chan struct{}, 1),
		readyCh:    make(chan struct{}),
		ownClient:  own,
	}
	p.engines, p.enginesErr = opt.Scrape.engineTable()
	p.stats.Store(&Stats{})
	p.wg.Add(2)
	go p.publishLoop()
	go func() {
		defer p.wg.Done()
		if err := src.Run(ctx, p.update); err != nil && ctx.Err() == nil {
			opt.Logger.Error("endpoint discovery stopped; keeping the last list", "err", err)
		}
	}()
	return p
}

// Close stops discovery, every scraper and the publisher, and waits for them.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		p.stop()
		p.wg.Wait()
		if p.ownClient {
			p.opt.Client.CloseIdleConnections()
		}
	})
	return nil
}

// Ready reports whether the last published snapshot has endpoints.
func (p *Pool) Ready() bool { return p.ready.Load() }

// ErrClosed is returned by WaitReady when the pool closes first.
var ErrClosed = errors.New("endpoints: pool closed before it had endpoints")

// WaitReady blocks until a snapshot with endpoints has been published once,
// ctx ends (returning its error), or the pool is closed (ErrClosed).
func (p *Pool) WaitReady(ctx context.Context) error {
	select {
	case <-p.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.ctx.Done():
		select {
		case <-p.readyCh:
			return nil
		default:
			return ErrClosed
		}
	}
}

// Stats returns the summary of the last published snapshot.
func (p *Pool) Stats() Stats { return *p.stats.Load() }

// Len is the number of endpoints in the pool now.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.members)
}

// EndpointStats returns each endpoint's scrape record, in pool order.
func (p *Pool) EndpointStats() []EndpointStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointStat, len(p.members))
	for i, m := range p.members {
		out[i] = EndpointStat{
			Handle: m.h, Healthy: m.healthy, Metrics: m.m,
			Scrapes: m.scrapes.Load(), ScrapeErrors: m.scrapeErrors.Load(),
			LastScrape: time.Duration(m.lastTook.Load()),
		}
		if m.lastErr != nil {
			out[i].LastError = m.lastErr.Error()
		}
	}
	return out
}

// update applies a new target list from the source: unchanged endpoints keep
// their handle and scraper, new ones get a handle and a scraper, removed ones
// are stopped. A changed identity (name, labels) gets a new handle; a changed
// metrics URL only restarts the scraper.
func (p *Pool) update(targets []Target) {
	log := p.opt.Logger
	p.mu.Lock()
	if p.ctx.Err() != nil {
		p.mu.Unlock()
		return
	}
	next := make(map[netip.AddrPort]*member, len(targets))
	members := make([]*member, 0, len(targets))
	for _, t := range targets {
		key := netip.AddrPortFrom(t.Addr, t.Port)
		if _, dup := next[key]; dup {
			log.Warn("endpoint listed twice; keeping the first", "endpoint", key.String())
			continue
		}
		m := p.byAddr[key]
		switch {
		case m != nil && sameEndpoint(m.target.Endpoint, t.Endpoint):
			if m.target.MetricsURL != t.MetricsURL {
				m.cancel()
				m.target = t
				p.startScraper(m)
				log.Info("endpoint metrics URL changed", "endpoint", m.h.String(), "url", p.opt.Scrape.URL(t))
			}
		default:
			if m != nil {
				m.cancel()
				log.Info("endpoint identity changed; new handle", "endpoint", key.String())
			}
			m = &member{h: scheduler.NewHandle(t.Endpoint), target: t, healthy: true}
			p.startScraper(m)
			log.Info("endpoint added", "endpoint", m.h.String(), "url", p.opt.Scrape.URL(t))
		}
		next[key] = m
		members = append(members, m)
	}
	for key, m := range p.byAddr {
		if next[key] != m {
			m.cancel()
			if next[key] == nil {
				log.Info("endpoint removed", "endpoint", m.h.String())
			}
		}
	}
	p.members, p.byAddr = members, next
	p.mu.Unlock()
	select {
	case p.membership <- struct{}{}:
	default:
	}
}

// startScraper starts m's scraper goroutine (p.mu held).
func (p *Pool) startScraper(m *member) {
	ctx, cancel := context.WithCancel(p.ctx)
	m.cancel = cancel
	s := newScraper(ctx, m.h, m.target, p.opt.Scrape, p.engines, p.enginesErr, p.opt.Client)
	if p.ownClient {
		s.useRaw(p.opt.ScrapeTimeout)
	}
	p.wg.Add(1)
	go p.runScraper(ctx, m, s)
}

func (p *Pool) runScraper(ctx context.Context, m *member, s *scraper) {
	defer p.wg.Done()
	defer s.close()
	timer := time.NewTimer(0)
	defer timer.Stop()
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		met, err := s.scrape()
		took := time.Since(start)
		if ctx.Err() != nil {
			return
		}
		m.scrapes.Add(1)
		m.lastTook.Store(int64(took))
		if err != nil {
			m.scrapeErrors.Add(1)
		} else if missing, changed := s.missingChanged(); changed && len(missing) > 0 {
			p.opt.Logger.Warn("metrics page lacks some families; using 0 for them",
				"endpoint", m.h.String(), "engine", s.eng.name, "missing", missing)
		}
		p.mu.Lock()
		if err == nil {
			m.m, m.healthy, m.fails, m.lastErr = met, true, 0, nil
		} else {
			m.fails++
			m.lastErr = err
			if m.fails >= p.opt.FailureThreshold {
				m.healthy = false
			}
		}
		p.dirty = true
		p.mu.Unlock()
		if p.opt.OnScrape != nil {
			p.opt.OnScrape(m.h, took, err)
		}
		next := max(p.opt.RefreshInterval-took, p.opt.RefreshInterval/10)
		if first {
			// Spread the endpoints' phases so scrapes do not land in bursts.
			next = rand.N(p.opt.RefreshInterval) + 1
			first = false
		}
		timer.Reset(next)
	}
}

// publishLoop rebuilds the snapshot at most once per refresh interval when
// scrapes landed or an endpoint's metrics are due to turn stale, and at once
// on membership changes.
func (p *Pool) publishLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.opt.RefreshInterval)
	defer t.Stop()
	var pb publisher
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.membership:
		case now := <-t.C:
			p.mu.Lock()
			dirty := p.dirty
			p.mu.Unlock()
			if !dirty && (pb.nextStale.IsZero() || now.Before(pb.nextStale)) {
				continue
			}
		}
		p.rebuild(&pb)
	}
}

// publisher is the publish loop's state.
type publisher struct {
	states    []scheduler.EndpointState
	errs      []error
	wasFresh  map[*scheduler.Handle]bool
	seen      map[*scheduler.Handle]bool
	allStale  bool // warned that every endpoint is stale
	everFresh bool
	nextStale time.Time
}

func (p *Pool) rebuild(pb *publisher) {
	p.mu.Lock()
	pb.states, pb.errs = pb.states[:0], pb.errs[:0]
	for _, m := range p.members {
		pb.states = append(pb.states, scheduler.EndpointState{H: m.h, M: m.m, Healthy: m.healthy})
		pb.errs = append(pb.errs, m.lastErr)
	}
	p.dirty = false
	p.mu.Unlock()

	now := time.Now()
	for _, e := range p.opt.Enrichers {
		e.Enrich(pb.states, now)
	}
	snap := scheduler.NewSnapshot(pb.states, now, p.opt.StalenessThreshold)
	p.sched.Publish(snap)

	st := &Stats{Endpoints: snap.Len(), AllStale: snap.AllStale, Seq: snap.Seq, BuiltAt: now}
	pb.nextStale = time.Time{}
	log := p.opt.Logger
	if pb.wasFresh == nil {
		pb.wasFresh, pb.seen = map[*scheduler.Handle]bool{}, map[*scheduler.Handle]bool{}
	}
	seen := pb.seen
	clear(seen)
	for i := range snap.Endpoints {
		e := &snap.Endpoints[i]
		seen[e.H] = true
		if e.Fresh {
			st.Ready++
			if due := e.M.UpdatedAt.Add(p.opt.StalenessThreshold); pb.nextStale.IsZero() || due.Before(pb.nextStale) {
				pb.nextStale = due
			}
		}
		was, known := pb.wasFresh[e.H]
		switch {
		case e.Fresh && !was && known:
			log.Info("endpoint back in scoring", "endpoint", e.H.String())
		case e.Fresh && !known:
			log.Debug("endpoint in scoring", "endpoint", e.H.String())
		case !e.Fresh && (was || (!known && !e.Healthy)):
			reason := "metrics older than " + p.opt.StalenessThreshold.String()
			if !e.Healthy && pb.errs[i] != nil {
				reason = pb.errs[i].Error()
			}
			log.Warn("endpoint out of scoring", "endpoint", e.H.String(), "reason", reason)
		}
		if e.Fresh || known || !e.M.UpdatedAt.IsZero() || !e.Healthy {
			pb.wasFresh[e.H] = e.Fresh
		}
	}
	for h := range pb.wasFresh {
		if !seen[h] {
			delete(pb.wasFresh, h)
		}
	}
	// Warn when every endpoint went stale after some had been fresh (not at
	// start-up, before the first scrapes land), and once when it ends.
	switch {
	case snap.AllStale && !pb.allStale && pb.everFresh:
		log.Warn("no endpoint has fresh metrics; scoring uses all of them", "endpoints", snap.Len())
		pb.allStale = true
	case !snap.AllStale && pb.allStale:
		log.Info("endpoints have fresh metrics again", "ready", st.Ready)
		pb.allStale = false
	}
	pb.everFresh = pb.everFresh || st.Ready > 0
	if n := len(snap.Live); n > 0 {
		for _, i := range snap.Live {
			st.AvgKVUsage += snap.Endpoints[i].M.KVUsage
			st.AvgWaiting += float64(snap.Endpoints[i].M.Waiting)
		}
		st.AvgKVUsage /= float64(n)
		st.AvgWaiting /= float64(n)
	}
	p.stats.Store(st)
	p.ready.Store(snap.Len() > 0)
	if snap.Len() > 0 {
		p.readyOnce.Do(func() { close(p.readyCh) })
	}
}
