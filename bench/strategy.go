package bench

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	eppconfig "github.com/fastepp/fastepp/configs/epp"
	"github.com/fastepp/fastepp/gateway"
)

// Strategy kinds.
const (
	KindDirect   = "direct"   // the gateway balances by itself (Balance)
	KindEPP      = "epp"      // the gateway in front of an in-process epp (EPPConfig)
	KindExternal = "external" // the gateway in front of an ext_proc picker elsewhere (Address)
)

// Strategy is one way of routing the scenario's requests.
type Strategy struct {
	// Name is how tables, summary.json and the report call it.
	Name string
	Kind string
	// Balance is the gateway's direct mode (KindDirect).
	Balance string
	// EPPConfig is the EndpointPickerConfig YAML (KindEPP); ConfigSource
	// says where it came from.
	EPPConfig    []byte
	ConfigSource string
	// Address is the external picker's ext_proc host:port (KindExternal).
	Address string
}

// strategyDoc lists the built-in strategies with one line each, in the
// order they are usually compared.
var strategyDoc = []struct{ name, doc string }{
	{"round-robin", "the gateway alone, requests in turn over the servers (a Kubernetes Service)"},
	{"random", "the gateway alone, a uniformly random server per request"},
	{"least-request", "the gateway alone, the less loaded of two random servers by the gateway's own in-flight counts (Envoy LEAST_REQUEST)"},
	{"epp-gie-default", "fastepp epp with the GIE EPP's default config: queue ×2, kv-cache ×2, prefix ×3 (configs/epp/gie-default.yaml)"},
	{"epp", "fastepp epp with its recommended config (configs/epp/recommended.yaml; the binary's default)"},
	{"epp-gpu-aware", "fastepp epp with the GIE default plus GPU telemetry: capacity-queue ×2 (instead of queue), kv-cache ×2, prefix ×3, gpu-headroom ×1 (configs/epp/gpu-aware.yaml)"},
	{"external=HOST:PORT", "any ext_proc picker already running there (GIE, llm-d, ...), driven by the same gateway; needs the fleet on fixed ports (fleet.base_port or --base-port)"},
	{"epp=FILE", "fastepp epp with the EndpointPickerConfig in FILE (for tuning)"},
}

// StrategyNames lists the strategy names ParseStrategy accepts.
func StrategyNames() []string {
	out := make([]string, len(strategyDoc))
	for i, s := range strategyDoc {
		out[i] = s.name
	}
	return out
}

// StrategyDocs returns "name — what it is" lines.
func StrategyDocs() []string {
	out := make([]string, len(strategyDoc))
	for i, s := range strategyDoc {
		out[i] = fmt.Sprintf("%-19s %s", s.name, s.doc)
	}
	return out
}

// ParseStrategy parses one strategy name.
func ParseStrategy(s string) (Strategy, error) {
	s = strings.TrimSpace(s)
	switch s {
	case gateway.BalanceRoundRobin, gateway.BalanceRandom, gateway.BalanceLeastRequest:
		return Strategy{Name: s, Kind: KindDirect, Balance: s}, nil
	case "epp", "epp-gie-default", "epp-gpu-aware":
		file := eppconfig.Recommended
		switch s {
		case "epp-gie-default":
			file = eppconfig.GIEDefault
		case "epp-gpu-aware":
			file = eppconfig.GPUAware
		}
		b, err := eppconfig.FS.ReadFile(file)
		if err != nil {
			return Strategy{}, err
		}
		return Strategy{Name: s, Kind: KindEPP, EPPConfig: b, ConfigSource: "configs/epp/" + file}, nil
	}
	if addr, ok := strings.CutPrefix(s, "external="); ok {
		host, port, err := net.SplitHostPort(addr)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return Strategy{}, fmt.Errorf("strategy %q: expected external=HOST:PORT (the picker's ext_proc address), found %q", s, addr)
		}
		return Strategy{Name: s, Kind: KindExternal, Address: addr}, nil
	}
	if file, ok := strings.CutPrefix(s, "epp="); ok {
		if file == "" {
			return Strategy{}, fmt.Errorf("strategy %q: expected epp=FILE (an EndpointPickerConfig YAML), found no file", s)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return Strategy{}, fmt.Errorf("strategy %q: %w", s, err)
		}
		name := "epp=" + strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
		return Strategy{Name: name, Kind: KindEPP, EPPConfig: b, ConfigSource: file}, nil
	}
	return Strategy{}, fmt.Errorf("unknown strategy %q: expected one of %s", s, strings.Join(StrategyNames(), ", "))
}

// ParseStrategies parses a comma-separated list; names must be unique.
func ParseStrategies(list string) ([]Strategy, error) {
	var out []Strategy
	seen := map[string]bool{}
	for _, item := range strings.Split(list, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		st, err := ParseStrategy(item)
		if err != nil {
			return nil, err
		}
		if seen[st.Name] {
			return nil, fmt.Errorf("strategy %q: listed twice", st.Name)
		}
		seen[st.Name] = true
		out = append(out, st)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("expected at least one strategy (known: %s), found none", strings.Join(StrategyNames(), ", "))
	}
	return out, nil
}
