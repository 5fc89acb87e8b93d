package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// ObjectiveGVR is GIE's InferenceObjective resource. GIE v1.6.0 no longer
// ships Go types for it, so it is read as unstructured data; the fields used
// are those of GIE v1.5.0's apix/v1alpha2 InferenceObjectiveSpec.
var ObjectiveGVR = schema.GroupVersionResource{Group: "inference.networking.x-k8s.io", Version: "v1alpha2", Resource: "inferenceobjectives"}

// objectiveKind is the Kind discovery lists for ObjectiveGVR.
const objectiveKind = "InferenceObjective"

// defaultObjectivesRecheck is how often Objectives looks for a missing
// InferenceObjective CRD (and checks a present one is still there).
const defaultObjectivesRecheck = 30 * time.Second

// Objectives follows the InferenceObjectives of one namespace that
// reference the pool and serves their priorities. A cluster without the
// InferenceObjective CRD (GIE v1.6 no longer requires it) is not an error:
// every name is then unknown, and the CRD is looked for again every Recheck.
//
// The exported fields are read when Run starts; Run is called once.
type Objectives struct {
	// Config connects to the API server.
	Config *rest.Config
	// Namespace holds the objectives (and the pool).
	Namespace string
	// PoolName keeps only the objectives whose spec.poolRef.name is it
	// ("" keeps every objective in the namespace).
	PoolName string
	// PoolGroup is the pool's API group, which spec.poolRef.group must
	// equal as in GIE's reconciler ("" = PoolGroup, the v1 InferencePool's;
	// the CRD defaults an unset poolRef.group to that too). Ignored when
	// PoolName is "".
	PoolGroup string
	// Logger receives the changes (default slog.Default()).
	Logger *slog.Logger
	// Recheck is how often a missing CRD is looked for again, and a found
	// one checked to be still there (default 30s).
	Recheck time.Duration

	prio   atomic.Pointer[map[string]int] // objective name → priority; replaced, never changed
	synced atomic.Bool
}

// Priority returns the priority of the objective called name (an unset
// spec.priority is 0) and whether such an objective for the pool exists.
// It takes no lock and does not allocate.
func (o *Objectives) Priority(name string) (priority int, ok bool) {
	m := o.prio.Load()
	if m == nil {
		return 0, false
	}
	priority, ok = (*m)[name]
	return priority, ok
}

// Synced reports whether the objectives have been listed once, or the CRD
// was found missing.
func (o *Objectives) Synced() bool { return o.synced.Load() }

// Run follows the objectives until ctx ends, and then returns nil. It
// returns an error only for a configuration it cannot use.
func (o *Objectives) Run(ctx context.Context) error {
	if o.Config == nil {
		return errors.New("kube.Objectives: expected a rest.Config, found nil")
	}
	if o.Namespace == "" {
		return errors.New("kube.Objectives: expected a namespace, found none")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("resource", ObjectiveGVR.Resource, "namespace", o.Namespace)
	recheck := o.Recheck
	if recheck <= 0 {
		recheck = defaultObjectivesRecheck
	}
	group := o.PoolGroup
	if group == "" {
		group = PoolGroup
	}
	dc, err := discovery.NewDiscoveryClientForConfig(o.Config)
	if err != nil {
		return fmt.Errorf("kube.Objectives: discovery client for %s: %w", o.Config.Host, err)
	}
	dyn, err := dynamic.NewForConfig(o.Config)
	if err != nil {
		return fmt.Errorf("kube.Objectives: dynamic client for %s: %w", o.Config.Host, err)
	}
	// client-go's informers log through the context's logr.Logger.
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(log.Handler()))

	w := &objectiveWatch{o: o, log: log, dc: dc, dyn: dyn, group: group, recheck: recheck}
	w.loop(ctx)
	return nil
}

// objectiveWatch is the state of one Objectives.Run.
type objectiveWatch struct {
	o       *Objectives
	log     *slog.Logger
	dc      discovery.DiscoveryInterface
	dyn     dynamic.Interface
	group   string
	recheck time.Duration

	mu sync.Mutex // serialises rebuild so the last stored table is the newest
}

// loop alternates between waiting for the CRD and watching the objectives
// until ctx ends.
func (w *objectiveWatch) loop(ctx context.Context) {
	const minRetry = time.Second
	retry := minRetry
	missingLogged := false
	for ctx.Err() == nil {
		found, err := w.crdInstalled()
		switch {
		case err != nil:
			w.log.Warn("cannot tell whether the InferenceObjective CRD is installed; retrying", "retry", retry, "err", err)
			if !sleepCtx(ctx, retry) {
				return
			}
			retry = min(2*retry, w.recheck)
			continue
		case !found:
			retry = minRetry
			w.o.prio.Store(nil)
			w.o.synced.Store(true)
			if !missingLogged {
				w.log.Info("InferenceObjective CRD not installed; objective priorities are off until it is", "recheck", w.recheck)
				missingLogged = true
			}
			if !sleepCtx(ctx, w.recheck) {
				return
			}
			continue
		}
		retry = minRetry
		if missingLogged {
			w.log.Info("InferenceObjective CRD installed; watching objectives")
		}
		missingLogged = false
		if gone := w.watch(ctx); gone {
			w.o.prio.Store(nil)
			w.log.Info("InferenceObjective CRD removed; objective priorities are off until it is back", "recheck", w.recheck)
			missingLogged = true
		}
	}
}

// crdInstalled asks discovery whether the API server serves ObjectiveGVR.
func (w *objectiveWatch) crdInstalled() (bool, error) {
	gv := ObjectiveGVR.GroupVersion().String()
	list, err := w.dc.ServerResourcesForGroupVersion(gv)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering %s: %w", gv, err)
	}
	for _, r := range list.APIResources {
		if r.Name == ObjectiveGVR.Resource && r.Kind == objectiveKind {
			return true, nil
		}
	}
	return false, nil
}

// watch runs a namespace-scoped informer on the objectives until ctx ends
// (false) or the CRD is gone (true). It rechecks the CRD every recheck, and
// at once when the watch reports the resource not found.
func (w *objectiveWatch) watch(ctx context.Context) (crdGone bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inf := dynamicinformer.NewFilteredDynamicInformer(w.dyn, ObjectiveGVR, w.o.Namespace, 0, toolscache.Indexers{}, nil).Informer()
	notFound := make(chan struct{}, 1)
	err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *toolscache.Reflector, err error) {
		if apierrors.IsNotFound(err) {
			select {
			case notFound <- struct{}{}:
			default:
			}
			w.log.Debug("watching objectives: resource not found", "err", err)
			return
		}
		toolscache.DefaultWatchErrorHandler(ctx, r, err)
	})
	if err == nil {
		err = inf.SetTransform(stripObjective)
	}
	var ready atomic.Bool
	if err == nil {
		_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { w.changed(&ready, inf.GetStore()) },
			UpdateFunc: func(any, any) { w.changed(&ready, inf.GetStore()) },
			DeleteFunc: func(any) { w.changed(&ready, inf.GetStore()) },
		})
	}
	if err != nil {
		// Only possible on an informer that already started, which this is not.
		w.log.Error("setting up the objectives informer failed", "err", err)
		sleepCtx(ctx, w.recheck)
		return false
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.RunWithContext(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	tick := time.NewTicker(w.recheck)
	defer tick.Stop()
	check := func() bool {
		found, err := w.crdInstalled()
		if err != nil {
			w.log.Debug("rechecking the InferenceObjective CRD failed", "err", err)
			return false
		}
		return !found
	}
	syncedc := make(chan struct{})
	go func() {
		if toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			close(syncedc)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-syncedc:
			syncedc = nil
			ready.Store(true)
			n := w.rebuild(inf.GetStore())
			w.o.synced.Store(true)
			w.log.Info("objectives synced", "pool", w.o.PoolName, "objectives", n)
		case <-tick.C:
			if check() {
				return true
			}
		case <-notFound:
			if check() {
				return true
			}
		}
	}
}

// changed rebuilds the table after an event, once the first list is in.
func (w *objectiveWatch) changed(ready *atomic.Bool, store toolscache.Store) {
	if ready.Load() {
		n := w.rebuild(store)
		w.log.Debug("objectives changed", "objectives", n)
	}
}

// rebuild replaces the priority table with the pool's objectives in store
// and returns how many there are.
func (w *objectiveWatch) rebuild(store toolscache.Store) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := make(map[string]int)
	for _, obj := range store.List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		name, prio, ok := w.objective(u)
		if ok {
			m[name] = prio
		}
	}
	w.o.prio.Store(&m)
	return len(m)
}

// objective reads one InferenceObjective: its name and priority, and
// whether it is for the pool (as GIE's reconciler decides: poolRef name and
// group match, not being deleted).
func (w *objectiveWatch) objective(u *unstructured.Unstructured) (name string, priority int, ok bool) {
	if u.GetDeletionTimestamp() != nil {
		return "", 0, false
	}
	if w.o.PoolName != "" {
		ref, _, _ := unstructured.NestedString(u.Object, "spec", "poolRef", "name")
		if ref != w.o.PoolName {
			return "", 0, false
		}
		group, _, _ := unstructured.NestedString(u.Object, "spec", "poolRef", "group")
		if group == "" {
			group = PoolGroup // the CRD's default
		}
		if group != w.group {
			return "", 0, false
		}
	}
	p, found, err := unstructured.NestedInt64(u.Object, "spec", "priority")
	if err != nil {
		w.log.Warn("ignoring an InferenceObjective's priority", "objective", u.GetName(), "err", err)
		found = false
	}
	if !found {
		p = 0 // GIE: an unset priority is 0
	}
	return u.GetName(), int(p), true
}

// stripObjective keeps only what objective reads, so the informer's cache
// holds little per object.
func stripObjective(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	out := &unstructured.Unstructured{Object: map[string]any{}}
	out.SetAPIVersion(u.GetAPIVersion())
	out.SetKind(u.GetKind())
	out.SetNamespace(u.GetNamespace())
	out.SetName(u.GetName())
	out.SetUID(u.GetUID())
	out.SetResourceVersion(u.GetResourceVersion())
	out.SetDeletionTimestamp(u.GetDeletionTimestamp())
	spec := map[string]any{}
	if p, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "priority"); found {
		spec["priority"] = p
	}
	if r, found, _ := unstructured.NestedFieldCopy(u.Object, "spec", "poolRef"); found {
		spec["poolRef"] = r
	}
	out.Object["spec"] = spec
	return out, nil
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
