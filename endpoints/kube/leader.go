package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

// The defaults of Leader are GIE's: GIE's EPP leaves them unset in its
// controller-runtime manager options, so controller-runtime's defaults apply
// (sigs.k8s.io/controller-runtime v0.24.1 pkg/manager/internal.go:
// defaultLeaseDuration, defaultRenewDeadline, defaultRetryPeriod).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaseName is the name of the Lease GIE's EPP elects its leader with for
// the InferencePool poolNamespace/poolName, so that fastepp and GIE replicas
// of one pool share (and never both win) one election. The format is GIE
// v1.5.0's pkg/epp/server/controller_manager.go (NewDefaultManager, the
// LeaderElectionID); the Lease lives in the pool's namespace.
func LeaseName(poolNamespace, poolName string) string {
	return fmt.Sprintf("epp-%s-%s.gateway-api-inference-extension.sigs.k8s.io", poolNamespace, poolName)
}

// Leader campaigns for a coordination.k8s.io Lease, as GIE's EPP does with
// --ha-enable-leader-election: a LeaseLock, released when Run's context
// ends. Unlike a controller-runtime manager it does not exit after losing
// the lease: it campaigns again.
//
// The exported fields are read when Run starts; Run is called once.
type Leader struct {
	// Config connects to the API server.
	Config *rest.Config
	// Namespace and Name are the Lease's (see LeaseName).
	Namespace, Name string
	// Identity is this candidate's holder identity (default: the host name,
	// "_" and a random UUID, as controller-runtime does).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// leaderelection timings (default DefaultLeaseDuration,
	// DefaultRenewDeadline, DefaultRetryPeriod).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Logger receives the transitions (default slog.Default()).
	Logger *slog.Logger
	// OnChange, when set, is called with true on becoming the leader and
	// false on ceasing to be, from the election's goroutine; it should
	// return quickly.
	OnChange func(leading bool)

	leading atomic.Bool
}

// IsLeader reports whether this candidate holds the lease.
func (l *Leader) IsLeader() bool { return l.leading.Load() }

// Run campaigns until ctx ends, campaigning again after losing the lease,
// and releases the lease (if held) before returning nil. It returns an
// error only for a configuration it cannot use.
func (l *Leader) Run(ctx context.Context) error {
	if l.Config == nil {
		return errors.New("kube.Leader: expected a rest.Config, found nil")
	}
	if l.Namespace == "" || l.Name == "" {
		return fmt.Errorf("kube.Leader: expected a Lease namespace and name, found %q and %q", l.Namespace, l.Name)
	}
	id := l.Identity
	if id == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("kube.Leader: no Identity and no host name: %w", err)
		}
		id = host + "_" + string(uuid.NewUUID())
	}
	cfg := leaderelection.LeaderElectionConfig{
		LeaseDuration:   orDefault(l.LeaseDuration, DefaultLeaseDuration),
		RenewDeadline:   orDefault(l.RenewDeadline, DefaultRenewDeadline),
		RetryPeriod:     orDefault(l.RetryPeriod, DefaultRetryPeriod),
		ReleaseOnCancel: true,
		Name:            l.Name,
	}
	if cfg.LeaseDuration <= cfg.RenewDeadline {
		return fmt.Errorf("kube.Leader: expected LeaseDuration > RenewDeadline, found %v and %v", cfg.LeaseDuration, cfg.RenewDeadline)
	}
	if float64(cfg.RenewDeadline) <= leaderelection.JitterFactor*float64(cfg.RetryPeriod) {
		return fmt.Errorf("kube.Leader: expected RenewDeadline > %v × RetryPeriod, found %v and %v", leaderelection.JitterFactor, cfg.RenewDeadline, cfg.RetryPeriod)
	}
	cs, err := coordinationv1.NewForConfig(rest.AddUserAgent(rest.CopyConfig(l.Config), "leader-election"))
	if err != nil {
		return fmt.Errorf("kube.Leader: client for %s: %w", l.Config.Host, err)
	}
	cfg.Lock = &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name},
		Client:     cs,
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("lease", l.Namespace+"/"+l.Name, "identity", id)
	// client-go's leaderelection logs through the context's logr.Logger.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(log.Handler()))

	for first := true; ctx.Err() == nil; first = false {
		if !first {
			log.Info("campaigning for the lease again")
		}
		// One term: client-go runs OnStartedLeading in its own goroutine,
		// which may run after OnStoppedLeading; stopped keeps a late start
		// from marking a finished term as leading.
		var mu sync.Mutex
		stopped := false
		cfg.Callbacks = leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				mu.Lock()
				defer mu.Unlock()
				if !stopped {
					l.set(log, true)
				}
			},
			OnStoppedLeading: func() {
				mu.Lock()
				defer mu.Unlock()
				stopped = true
				l.set(log, false)
			},
			OnNewLeader: func(holder string) {
				if holder != "" && holder != id {
					log.Info("lease held by another", "holder", holder)
				}
			},
		}
		le, err := leaderelection.NewLeaderElector(cfg)
		if err != nil {
			return fmt.Errorf("kube.Leader: %w", err)
		}
		le.Run(ctx)
	}
	return nil
}

// set records a transition and reports it.
func (l *Leader) set(log *slog.Logger, leading bool) {
	if l.leading.Swap(leading) == leading {
		return
	}
	if leading {
		log.Info("became the leader")
	} else {
		log.Info("stopped being the leader")
	}
	if l.OnChange != nil {
		l.OnChange(leading)
	}
}

// orDefault is d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
