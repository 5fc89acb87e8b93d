package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fastepp/fastepp/endpoints/kube"
)

// kubeMode is what epp runs when the pool comes from Kubernetes
// (--pool-name or --endpoint-selector): the pool source, the
// InferenceObjective priorities, the optional leader election and the
// /metrics authentication, all on one API server connection.
type kubeMode struct {
	cfg        *rest.Config
	src        *kube.Source
	objectives *kube.Objectives
	leader     *kube.Leader
	metrics    func(http.Handler) http.Handler
}

// restConfig finds the API server in controller-runtime's order:
// --kubeconfig, else $KUBECONFIG, else the in-cluster ServiceAccount, else
// ~/.kube/config.
func restConfig(path string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	switch {
	case path != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", path, err)
		}
	case os.Getenv("KUBECONFIG") == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster ServiceAccount: %w", err)
		}
	default:
		rules := clientcmd.NewDefaultClientConfigLoadingRules() // $KUBECONFIG, else ~/.kube/config
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("finding the Kubernetes API server: expected --kubeconfig, $KUBECONFIG, an in-cluster ServiceAccount or ~/.kube/config; found none usable (%v)", err)
		}
	}
	cfg.UserAgent = "fastepp-epp"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	return cfg, nil
}

// newKubeMode connects and checks what would otherwise fail silently later
// (the API server unreachable, the InferencePool CRD missing).
func newKubeMode(ctx context.Context, o *options, log *slog.Logger) (*kubeMode, error) {
	kube.UseLogger(log.With("component", "client-go"))
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return nil, err
	}
	k := &kubeMode{cfg: cfg}
	k.src = &kube.Source{Config: cfg, Namespace: o.poolNamespace, PoolName: o.poolName, Logger: log}
	if o.poolName == "" {
		k.src.Selector, k.src.TargetPorts = o.selector, o.targetPorts
	}
	if err := k.src.Check(ctx); err != nil {
		return nil, err
	}
	k.objectives = &kube.Objectives{Config: cfg, Namespace: o.poolNamespace, PoolName: o.poolName, PoolGroup: o.poolGroup, Logger: log}
	if o.haLeaderElection {
		name := o.poolName
		if name == "" {
			name = "selector" // GIE names the lease after the pool; a selector pool has none
		}
		k.leader = &kube.Leader{Config: cfg, Namespace: o.poolNamespace, Name: kube.LeaseName(o.poolNamespace, name), Logger: log}
	}
	if o.metricsEndpointAuth {
		wrap, err := kube.MetricsAuth(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("--metrics-endpoint-auth: %w", err)
		}
		k.metrics = wrap
	}
	return k, nil
}

// start runs the objectives watch and the election until ctx ends.
func (k *kubeMode) start(ctx context.Context, log *slog.Logger) {
	go func() {
		if err := k.objectives.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("InferenceObjective watch stopped; priorities stay as last seen", "err", err)
		}
	}()
	if k.leader != nil {
		go func() {
			if err := k.leader.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("leader election stopped; this replica stays not ready", "err", err)
			}
		}()
	}
}

// ready adds Kubernetes' conditions to readiness: the pool listed once (and,
// in pool mode, present), and leadership when elected.
func (k *kubeMode) ready() bool {
	st := k.src.State()
	if !st.Synced || (k.src.PoolName != "" && !st.PoolFound) {
		return false
	}
	return k.leader == nil || k.leader.IsLeader()
}

// synced is GIE's "pool has synced": the pool listed once and present,
// endpoints or not, leader or not.
func (k *kubeMode) synced() bool {
	st := k.src.State()
	return st.Synced && (k.src.PoolName == "" || st.PoolFound)
}

// priority resolves an objective: the InferenceObjective in the cluster
// first, then --objective-priorities.
func (k *kubeMode) priority(fallback func(string) (int, bool)) func(string) (int, bool) {
	return func(name string) (int, bool) {
		if p, ok := k.objectives.Priority(name); ok {
			return p, true
		}
		return fallback(name)
	}
}
