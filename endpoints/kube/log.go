package kube

import (
	"log/slog"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

var useLoggerOnce sync.Once

// UseLogger sends the Kubernetes libraries' own logs (client-go's klog,
// controller-runtime's logr) to l; their V(n) lines become slog level -n, so
// l's handler level decides what shows. Those loggers are process globals
// that running clients read without locks, so only the first call takes
// effect: make it before any watch starts.
func UseLogger(l *slog.Logger) {
	useLoggerOnce.Do(func() {
		lr := logr.FromSlogHandler(l.Handler())
		ctrllog.SetLogger(lr)
		klog.SetLogger(lr)
	})
}
