// Command controller is fastepp's companion Kubernetes controller: it turns
// each ModelRoute (fastepp.io/v1alpha1) into an InferencePool, its endpoint
// picker (Deployment, Service, ConfigMap, ServiceAccount, RBAC) and the
// HTTPRoute or AIGatewayRoute to it, and keeps them converged. See
// --help; deploy/controller has the CRDs, RBAC and Deployment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/fastepp/fastepp/controller"
	"github.com/fastepp/fastepp/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// options are the parsed flags.
type options struct {
	kubeconfig       string
	metricsAddr      string
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	eppImage         string
	textLog          bool
	showVersion      bool
}

var errVersion = errors.New("version")

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, then $KUBECONFIG)")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of /metrics (controller-runtime's reconcile counts, errors and durations); 0 disables it")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "run leader election (a Lease), so only one replica reconciles")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader-election Lease (default: the pod's namespace)")
	fs.StringVar(&o.eppImage, "epp-image", "ghcr.io/fastepp/epp:"+defaultTag(), "picker image for ModelRoutes that name none")
	fs.BoolVar(&o.textLog, "log-text", false, "logs as text lines instead of JSON")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: controller [flags]\n\nfastepp's companion controller: one ModelRoute (fastepp.io/v1alpha1) wires an\nInferencePool, its endpoint picker and the route to it.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.showVersion {
		fmt.Fprintln(out, version.String("controller"))
		return o, errVersion
	}
	return o, nil
}

// defaultTag is the picker image tag matching this build ("latest" for
// development builds).
func defaultTag() string {
	if version.Version == "dev" || version.Version == "" {
		return "latest"
	}
	return version.Version
}

// run is main without the process. cfg, when not nil, is used instead of
// --kubeconfig (tests).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, cfg *rest.Config) int {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errVersion) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "controller: %v\n(see controller --help)\n", err)
		return 2
	}
	var h slog.Handler = slog.NewJSONHandler(stderr, nil)
	if o.textLog {
		h = slog.NewTextHandler(stderr, nil)
	}
	ctrl.SetLogger(logr.FromSlogHandler(h))
	if cfg == nil {
		cfg, err = restConfig(o.kubeconfig)
		if err != nil {
			fmt.Fprintf(stderr, "controller: %v\n", err)
			return 1
		}
	}
	if err := serve(ctx, cfg, o); err != nil {
		fmt.Fprintf(stderr, "controller: %v\n", err)
		return 1
	}
	return 0
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
}

func serve(ctx context.Context, cfg *rest.Config, o options) error {
	scheme, err := controller.Scheme()
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "fastepp-controller.fastepp.io",
		LeaderElectionNamespace:       o.leaderElectionNS,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptr(10 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := controller.Setup(mgr, o.eppImage); err != nil {
		return fmt.Errorf("setting up the ModelRoute controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

func ptr[T any](v T) *T { return &v }
