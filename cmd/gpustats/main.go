// Command gpustats prints the GPU telemetry a gpustats source reads, or
// serves it in AMD device-metrics-exporter names so a sidecar can feed the
// picker where the exporter is not installed. See --help and package gpustats.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fastepp/fastepp/gpustats"
	"github.com/fastepp/fastepp/version"
)

const usage = `gpustats — read GPU telemetry (AMD first) the way fastepp's picker will.

Usage:
  gpustats [--source auto|sysfs|amdsmi|exporter|fake] [--sysfs-root DIR]
           [--exporter-url URL] [--once] [--interval 1s] [--format json|table]
  gpustats serve [--listen :9400] [--source ...] [--hostname NAME]
           [--pod NAME] [--namespace NS]
  gpustats --version | --help

Without a command it reads the GPUs and prints them: once with --once,
otherwise every --interval until interrupted. JSON is an array of objects
with index, product, unique_id, gfx_activity_percent, mem_activity_percent,
vram_used_bytes, vram_total_bytes, power_watts, power_cap_watts,
edge_temperature_celsius, junction_temperature_celsius,
memory_temperature_celsius, sclk_hz, mclk_hz, read_time (and pod, namespace,
host for exporter sources). A value the card does not expose is null (JSON)
or "-" (table), never 0.

Sources:
  auto      amd-smi if compiled in and it initialises, else sysfs if an AMD
            card is present, else none (no GPUs, not an error)
  sysfs     the amdgpu driver's files under --sysfs-root (default /sys)
  amdsmi    ROCm's libamd_smi; only in a build with -tags amdsmi (cgo)
  exporter  a scrape of --exporter-url: AMD device-metrics-exporter or NVIDIA
            dcgm-exporter names
  fake      two fixed demo GPUs

serve exports what the source reads at /metrics, in the AMD exporter's names
and units (gpu_gfx_activity, gpu_used_vram MB, gpu_power_usage W,
gpu_junction_temperature C, gpu_clock MHz, ...), labelled with gpu_id,
card_model, serial_number, hostname and, when given, pod and namespace (the
defaults come from $POD_NAME and $POD_NAMESPACE, as the downward API sets
them). It reads the source on every scrape. It prints
"gpustats serving on http://ADDR/metrics" once it accepts connections
(--listen 127.0.0.1:0 picks a free port); SIGINT/SIGTERM stop it.

Exit status: 0 on success, 1 when the source fails, 2 on a usage error.

Flags:
`

type options struct {
	source, sysfsRoot, exporterURL string
	once                           bool
	interval                       time.Duration
	format                         string

	serve                      bool
	listen, host, pod, nsLabel string
}

// errDone ends run with status 0 after --help or --version.
var errDone = errors.New("done")

func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	name := "gpustats"
	if len(args) > 0 && args[0] == "serve" {
		o.serve = true
		name = "gpustats serve"
		args = args[1:]
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.source, "source", "auto", "where to read: "+strings.Join(gpustats.Kinds, "|"))
	fs.StringVar(&o.sysfsRoot, "sysfs-root", "/sys", "sysfs mount point (sysfs source)")
	fs.StringVar(&o.exporterURL, "exporter-url", "", "metrics page of a device-metrics-exporter or dcgm-exporter (exporter source)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if o.serve {
		host, _ := os.Hostname()
		fs.StringVar(&o.listen, "listen", ":9400", "address to serve /metrics on")
		fs.StringVar(&o.host, "hostname", host, "hostname label for GPUs that carry none")
		fs.StringVar(&o.pod, "pod", os.Getenv("POD_NAME"), "pod label (the pod this sidecar serves)")
		fs.StringVar(&o.nsLabel, "namespace", os.Getenv("POD_NAMESPACE"), "namespace label")
	} else {
		fs.BoolVar(&o.once, "once", false, "read once and exit")
		fs.DurationVar(&o.interval, "interval", time.Second, "time between reads without --once")
		fs.StringVar(&o.format, "format", "table", "output format: json|table")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errDone
		}
		return nil, err
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("gpustats"))
		return nil, errDone
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("expected flags only (the one command is serve, first), found %q", fs.Arg(0))
	}
	if !o.serve {
		if o.format != "json" && o.format != "table" {
			return nil, fmt.Errorf("--format: expected json or table, found %q", o.format)
		}
		if o.interval <= 0 {
			return nil, fmt.Errorf("--interval: expected a positive duration, found %s", o.interval)
		}
	}
	known := false
	for _, k := range gpustats.Kinds {
		known = known || o.source == k
	}
	if !known {
		return nil, fmt.Errorf("--source: expected one of %s, found %q", strings.Join(gpustats.Kinds, "|"), o.source)
	}
	if o.source == gpustats.KindExporter && o.exporterURL == "" {
		return nil, errors.New("--source exporter: expected --exporter-url, found none")
	}
	return o, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	stop()
	os.Exit(code)
}

// run is main without the process: ready, when not nil, receives the serve
// address once it listens.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- string) int {
	o, err := parseFlags(args, stdout)
	if errors.Is(err, errDone) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "gpustats: %v (see --help)\n", err)
		return 2
	}
	src, err := gpustats.New(gpustats.Options{Kind: o.source, SysfsRoot: o.sysfsRoot, ExporterURL: o.exporterURL})
	if err != nil {
		fmt.Fprintf(stderr, "gpustats: %v\n", err)
		return 1
	}
	defer gpustats.Close(src)
	if o.serve {
		return serve(ctx, o, src, stdout, stderr, ready)
	}
	for {
		if code := printOnce(ctx, o, src, stdout, stderr); code != 0 || o.once {
			return code
		}
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(o.interval):
		}
	}
}

func printOnce(ctx context.Context, o *options, src gpustats.Source, stdout, stderr io.Writer) int {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	gpus, err := src.Read(rctx)
	cancel()
	if err != nil && ctx.Err() != nil {
		return 0 // interrupted: not a source failure
	}
	if err != nil && len(gpus) == 0 {
		fmt.Fprintf(stderr, "gpustats: source %s: %v\n", src.Name(), err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "gpustats: warning: source %s: %v\n", src.Name(), err)
	}
	if gpus == nil {
		gpus = []gpustats.GPU{}
	}
	if o.format == "json" {
		b, err := json.MarshalIndent(gpus, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "gpustats: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	writeTable(stdout, src.Name(), gpus)
	return 0
}

// writeTable prints one row per GPU; absent values are "-".
func writeTable(w io.Writer, source string, gpus []gpustats.GPU) {
	if len(gpus) == 0 {
		fmt.Fprintf(w, "no GPUs (source %s)\n", source)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IDX\tPRODUCT\tGFX%\tMEM%\tVRAM GB\tPOWER W\tEDGE C\tJUNC C\tMEM C\tSCLK MHz\tMCLK MHz\tHOST\tPOD")
	for _, g := range gpus {
		vram := "-"
		if g.VRAMUsedBytes != nil || g.VRAMTotalBytes != nil {
			vram = num(g.VRAMUsedBytes, 1e9, 1) + "/" + num(g.VRAMTotalBytes, 1e9, 1)
		}
		power := num(g.PowerWatts, 1, 0)
		if g.PowerCapWatts != nil {
			power += "/" + num(g.PowerCapWatts, 1, 0)
		}
		pod := "-"
		if g.Pod != "" {
			pod = g.Namespace + "/" + g.Pod
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Index, orDash(g.Product),
			num(g.GfxActivityPercent, 1, 0), num(g.MemActivityPercent, 1, 0), vram, power,
			num(g.EdgeTemperatureCelsius, 1, 0), num(g.JunctionTemperatureCelsius, 1, 0), num(g.MemoryTemperatureCelsius, 1, 0),
			num(g.SclkHz, 1e6, 0), num(g.MclkHz, 1e6, 0), orDash(g.Host), pod)
	}
	tw.Flush()
}

func num(v *float64, div float64, prec int) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(*v/div, 'f', prec, 64)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func serve(ctx context.Context, o *options, src gpustats.Source, stdout, stderr io.Writer, ready chan<- string) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		gpus, err := src.Read(rctx)
		cancel()
		if err != nil && len(gpus) == 0 {
			http.Error(w, fmt.Sprintf("source %s: %v", src.Name(), err), http.StatusServiceUnavailable)
			return
		}
		if err != nil {
			log.Warn("partial read", "source", src.Name(), "err", err)
		}
		for i := range gpus {
			if gpus[i].Pod == "" && o.pod != "" {
				gpus[i].Pod, gpus[i].Namespace = o.pod, o.nsLabel
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := gpustats.WriteExporter(w, gpus, o.host); err != nil {
			log.Warn("write", "err", err)
		}
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		fmt.Fprintf(stderr, "gpustats serve: --listen %s: %v\n", o.listen, err)
		return 1
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	addr := ln.Addr().String()
	fmt.Fprintf(stdout, "gpustats serving on http://%s/metrics (source %s)\n", addr, src.Name())
	if ready != nil {
		ready <- addr
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "gpustats serve: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "gpustats serve: shutdown: %v\n", err)
		return 1
	}
	return 0
}
