package extproc_test

import (
	"log/slog"
	"net"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fastepp/fastepp/config"
	"github.com/fastepp/fastepp/extproc"
	"github.com/fastepp/fastepp/scheduler"
)

// How cmd/epp wires the server: a scheduler fed by the pool, the options from
// flags, the grpc.Server options for large BUFFERED bodies, Register.
func ExampleNew() {
	plan, err := config.DefaultPlan()
	if err != nil {
		panic(err)
	}
	sched := scheduler.New(plan) // the pool publishes snapshots into it

	mode, err := extproc.ParseBodyMode("auto") // --request-body-mode
	if err != nil {
		panic(err)
	}
	opts := extproc.Options{
		BodyMode:     mode,
		MaxBodyBytes: 16 << 20, // --max-request-body-bytes
		Logger:       slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registerer:   prometheus.NewRegistry(), // the registry served on --metrics-port
	}
	srv, err := extproc.New(sched, opts)
	if err != nil {
		panic(err)
	}
	g := grpc.NewServer(extproc.GRPCServerOptions(opts.MaxBodyBytes)...) // plus TLS credentials
	srv.Register(g)

	lis, err := net.Listen("tcp", "127.0.0.1:0") // --grpc-port
	if err != nil {
		panic(err)
	}
	go g.Serve(lis)
	// On SIGTERM: g.GracefulStop() waits for open streams (srv.Open()).
	g.Stop()
	// Output:
}
