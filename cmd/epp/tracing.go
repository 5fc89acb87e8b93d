package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/fastepp/fastepp/version"
)

// defaultServiceName is GIE's, so that trace queries written for its picker
// find ours (OTEL_SERVICE_NAME overrides it).
const defaultServiceName = "gateway-api-inference-extension/epp"

// tracing is the OpenTelemetry set-up of --tracing.
type tracing struct {
	tracer   trace.Tracer // nil: no traces
	shutdown func(context.Context) error
	what     string // for the start-up log line
}

// initTracing configures OpenTelemetry from the standard OTEL_* variables,
// as GIE does: the exporter (OTEL_TRACES_EXPORTER: otlp over gRPC to
// OTEL_EXPORTER_OTLP_ENDPOINT, console to stdout, or none), the sampler
// (OTEL_TRACES_SAMPLER / _ARG; default parentbased_traceidratio 0.1) and the
// service name. Unlike GIE, whose default exporter prints every sampled span
// to stdout, an unset OTEL_TRACES_EXPORTER means otlp when an OTLP endpoint is
// configured and none otherwise. env reads a variable (os.LookupEnv in epp).
func initTracing(ctx context.Context, env func(string) (string, bool), stdout io.Writer, log *slog.Logger) (*tracing, error) {
	get := func(k string) string { v, _ := env(k); return v }
	exporterName, set := env("OTEL_TRACES_EXPORTER")
	if !set {
		exporterName = "none"
		if get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			exporterName = "otlp"
		}
	}
	var exp sdktrace.SpanExporter
	var err error
	switch exporterName {
	case "none":
		return &tracing{shutdown: func(context.Context) error { return nil },
			what: "off: no exporter (set OTEL_EXPORTER_OTLP_ENDPOINT, or OTEL_TRACES_EXPORTER=otlp|console)"}, nil
	case "otlp":
		// The exporter reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers,
		// TLS); like GIE, plaintext unless the endpoint says https.
		opts := []otlptracegrpc.Option{}
		if ep := get("OTEL_EXPORTER_OTLP_ENDPOINT"); ep == "" || !hasScheme(ep, "https") {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case "console":
		exp, err = stdouttrace.New(stdouttrace.WithWriter(stdout))
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: expected otlp, console or none, found %q", exporterName)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: %s exporter: %w", exporterName, err)
	}
	sampler, samplerDesc, err := samplerFromEnv(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return nil, err
	}
	service := get("OTEL_SERVICE_NAME")
	if service == "" {
		service = defaultServiceName
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", service),
		attribute.String("service.version", version.Version),
	)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sampler), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "err", err) }))
	return &tracing{
		tracer: tp.Tracer("github.com/fastepp/fastepp/extproc"),
		shutdown: func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return tp.Shutdown(ctx)
		},
		what: exporterName + " exporter, sampler " + samplerDesc + ", service " + service,
	}, nil
}

func hasScheme(url, scheme string) bool {
	return len(url) > len(scheme)+3 && url[:len(scheme)+3] == scheme+"://"
}

// samplerFromEnv builds the sampler the OTEL_TRACES_SAMPLER variables name
// (GIE's default: parentbased_traceidratio with ratio 0.1).
func samplerFromEnv(name, arg string) (sdktrace.Sampler, string, error) {
	if name == "" {
		name = "parentbased_traceidratio"
	}
	ratio := 0.1
	if arg != "" && (name == "traceidratio" || name == "parentbased_traceidratio") {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return nil, "", fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: expected a ratio in 0..1, found %q", arg)
		}
		ratio = r
	}
	desc := name
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample(), desc, nil
	case "always_off":
		return sdktrace.NeverSample(), desc, nil
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio), desc + " " + strconv.FormatFloat(ratio, 'g', -1, 64), nil
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), desc, nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), desc, nil
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), desc + " " + strconv.FormatFloat(ratio, 'g', -1, 64), nil
	}
	return nil, "", fmt.Errorf("OTEL_TRACES_SAMPLER: expected always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio, found %q", name)
}
