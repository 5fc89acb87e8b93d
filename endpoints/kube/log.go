package kube

import (
	"log/slog"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// UseLogger sends the Kubernetes libraries' own logs (client-go's klog,
// controller-runtime's logr) to l, at warnings and above unless l's handler
// enables debug. Call it once, before any watch starts.
func UseLogger(l *slog.Logger) {
	lr := logr.FromSlogHandler(l.Handler())
	ctrllog.SetLogger(lr)
	klog.SetLogger(lr)
}
