package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/scheduler"
)

// PoolGroup is the API group of the InferencePool this package watches.
const PoolGroup = "inference.networking.k8s.io"

// ActivePortsAnnotation on a pod restricts which of the pool's target ports
// are endpoints (comma-separated port numbers), as in GIE.
const ActivePortsAnnotation = "inference.networking.k8s.io/active-ports"

// Source discovers the pool's endpoints from the API server: the Ready pods
// (with an IP, not terminating) that the InferencePool's selector matches,
// one endpoint per target port, or, without a pool object (Selector set),
// the pods Selector matches on TargetPorts. Pool, selector, port and pod
// changes apply live. It watches one namespace only.
type Source struct {
	// Config connects to the API server.
	Config *rest.Config
	// Namespace holds the pool and its pods.
	Namespace string
	// PoolName is the InferencePool to follow (pool mode).
	PoolName string
	// Selector and TargetPorts define the pool without a pool object
	// (selector mode; PoolName empty).
	Selector    map[string]string
	TargetPorts []int
	// Logger receives one line per change (default slog.Default()).
	Logger *slog.Logger

	synced    atomic.Bool
	poolFound atomic.Bool
	mu        sync.Mutex
	desc      string // the pool as last seen, for logs and State
}

// State is what the source knows: whether it has listed everything once
// (Synced), in pool mode whether the InferencePool exists, and the pool as
// last seen (for logs).
type State struct {
	Synced    bool
	PoolFound bool
	Pool      string
}

// State returns the current state.
func (s *Source) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return State{Synced: s.synced.Load(), PoolFound: s.poolFound.Load(), Pool: s.desc}
}

// ParseSelector parses --endpoint-selector: k=v pairs separated by commas.
func ParseSelector(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("expected key=value[,key=value...], found %q", s)
		}
		out[k] = v
	}
	if _, err := labels.ValidatedSelectorFromSet(out); err != nil {
		return nil, fmt.Errorf("%q: %v", s, err)
	}
	return out, nil
}

// ParsePorts parses --endpoint-target-ports: port numbers separated by commas.
func ParsePorts(s string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("expected port numbers 1..65535 separated by commas, found %q", s)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("expected each port once, found %d twice in %q", n, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// newScheme knows Pods and InferencePool v1.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := giev1.Install(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Check fails fast on what would keep the source from ever syncing: the
// API server unreachable or refusing the credentials, the InferencePool CRD
// not installed.
func (s *Source) Check(ctx context.Context) error {
	if s.PoolName == "" {
		return nil
	}
	sch, err := newScheme()
	if err != nil {
		return err
	}
	c, err := client.New(s.Config, client.Options{Scheme: sch})
	if err != nil {
		return fmt.Errorf("connecting to the API server %s: %w", s.Config.Host, err)
	}
	var p giev1.InferencePool
	err = c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.PoolName}, &p)
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil // a missing pool is waited for
	case meta.IsNoMatchError(err):
		return fmt.Errorf("InferencePool %s/v1 is not served by %s: install GIE's InferencePool CRD (v1.x)", PoolGroup, s.Config.Host)
	default:
		return fmt.Errorf("reading InferencePool %s/%s from %s: %w", s.Namespace, s.PoolName, s.Config.Host, err)
	}
}

// Run watches until ctx ends and calls update with the full target list on
// the first sync and on every change.
func (s *Source) Run(ctx context.Context, update func([]endpoints.Target)) error {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.PoolName == "" && len(s.Selector) == 0 {
		return errors.New("kube.Source: expected PoolName or Selector, found neither")
	}
	sch, err := newScheme()
	if err != nil {
		return err
	}
	byObject := map[client.Object]cache.ByObject{}
	if s.PoolName != "" {
		byObject[&giev1.InferencePool{}] = cache.ByObject{Field: fields.OneTermEqualSelector("metadata.name", s.PoolName)}
	}
	c, err := cache.New(s.Config, cache.Options{
		Scheme:            sch,
		DefaultNamespaces: map[string]cache.Config{s.Namespace: {}},
		ByObject:          byObject,
		DefaultTransform:  cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("watching namespace %s on %s: %w", s.Namespace, s.Config.Host, err)
	}
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	kinds := []client.Object{&corev1.Pod{}}
	if s.PoolName != "" {
		kinds = append(kinds, &giev1.InferencePool{})
	}
	for _, k := range kinds {
		inf, err := c.GetInformer(ctx, k)
		if err != nil {
			return fmt.Errorf("watching %T in %s: %w", k, s.Namespace, err)
		}
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		if err := ctx.Err(); err != nil {
			return nil
		}
		return errors.New("kube.Source: the watch cache did not sync")
	}
	var last []endpoints.Target
	first := true
	for {
		targets, desc, found, err := s.list(ctx, c)
		if err != nil {
			s.Logger.Error("listing the pool's pods failed; keeping the last list", "err", err)
		} else {
			// The pool's presence and description change without the
			// targets changing (a pool created with no Ready pod yet).
			s.poolFound.Store(found)
			s.mu.Lock()
			s.desc = desc
			s.mu.Unlock()
		}
		if err == nil && (first || !endpoints.SameTargets(last, targets)) {
			s.Logger.Info("pool endpoints", "pool", desc, "endpoints", len(targets))
			update(targets)
			last = targets
			first = false
			s.synced.Store(true)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kube.Source: watch stopped: %w", err)
		case <-kick:
		}
	}
}

// list computes the targets from the cache.
func (s *Source) list(ctx context.Context, c client.Reader) (out []endpoints.Target, desc string, found bool, err error) {
	sel, ports := s.Selector, s.TargetPorts
	desc = "selector " + labels.Set(sel).String()
	if s.PoolName != "" {
		var p giev1.InferencePool
		err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.PoolName}, &p)
		if apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil) {
			return nil, "InferencePool " + s.Namespace + "/" + s.PoolName + " (not found)", false, nil
		}
		if err != nil {
			return nil, "", false, err
		}
		sel = make(map[string]string, len(p.Spec.Selector.MatchLabels))
		for k, v := range p.Spec.Selector.MatchLabels {
			sel[string(k)] = string(v)
		}
		ports = ports[:0:0]
		for _, tp := range p.Spec.TargetPorts {
			ports = append(ports, int(tp.Number))
		}
		desc = fmt.Sprintf("InferencePool %s/%s selector %s ports %v", s.Namespace, s.PoolName, labels.Set(sel), ports)
		found = true
		if len(sel) == 0 {
			// An empty selector would match every pod in the namespace;
			// the CRD requires one, so this is a pool being written.
			return nil, desc + " (empty selector)", true, nil
		}
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(s.Namespace), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(sel)}); err != nil {
		return nil, "", false, err
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !podReady(pod) {
			continue
		}
		addr, err := netip.ParseAddr(pod.Status.PodIP)
		if err != nil {
			continue
		}
		active := activePorts(pod, ports)
		lbls := maps.Clone(pod.Labels)
		for idx, port := range ports {
			if !active[port] {
				continue
			}
			name := pod.Name
			if len(ports) > 1 {
				name = pod.Name + "-rank-" + strconv.Itoa(idx) // GIE's data-parallel rank names
			}
			out = append(out, endpoints.Target{Endpoint: scheduler.Endpoint{
				Name: name, Namespace: pod.Namespace, Addr: addr, Port: uint16(port), Labels: lbls,
			}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, desc, found, nil
}

// podReady is GIE's readiness rule: not terminating, with a PodReady=True
// condition.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// activePorts applies ActivePortsAnnotation: without it every port is
// active; with it only the listed ones that are also target ports.
func activePorts(p *corev1.Pod, ports []int) map[int]bool {
	out := make(map[int]bool, len(ports))
	v, ok := p.Annotations[ActivePortsAnnotation]
	for _, port := range ports {
		out[port] = !ok
	}
	if ok {
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
				if _, isTarget := out[n]; isTarget {
					out[n] = true
				}
			}
		}
	}
	return out
}
