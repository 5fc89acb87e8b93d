package simulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"time"
)

// Faults are a server's injected failures. The zero value injects nothing.
type Faults struct {
	// ErrorRate is the share of generation requests answered 500 at once.
	ErrorRate float64 `json:"error_rate" yaml:"error_rate"`
	// LatencyMultiplier scales every engine step (1 = as modelled; 0 means 1).
	LatencyMultiplier float64 `json:"latency_multiplier" yaml:"latency_multiplier"`
	// MetricsDelayMS delays every /metrics answer (a slow scrape target).
	MetricsDelayMS int `json:"metrics_delay_ms" yaml:"metrics_delay_ms"`
	// MetricsErrorRate is the share of /metrics scrapes answered 500.
	MetricsErrorRate float64 `json:"metrics_error_rate" yaml:"metrics_error_rate"`
}

// Validate reports the first out-of-range field.
func (f Faults) Validate() error {
	rates := []struct {
		name string
		v    float64
	}{{"error_rate", f.ErrorRate}, {"metrics_error_rate", f.MetricsErrorRate}}
	for _, r := range rates {
		if !(r.v >= 0 && r.v <= 1) {
			return fmt.Errorf("faults.%s: expected a fraction in [0, 1], found %g", r.name, r.v)
		}
	}
	if f.LatencyMultiplier < 0 || math.IsNaN(f.LatencyMultiplier) || math.IsInf(f.LatencyMultiplier, 0) || f.LatencyMultiplier > 1000 {
		return fmt.Errorf("faults.latency_multiplier: expected a number in (0, 1000] (0 = 1), found %g", f.LatencyMultiplier)
	}
	if f.MetricsDelayMS < 0 || f.MetricsDelayMS > 600_000 {
		return fmt.Errorf("faults.metrics_delay_ms: expected 0..600000, found %d", f.MetricsDelayMS)
	}
	return nil
}

// SetFaults replaces the server's fault settings.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.setFaults(f)
	return nil
}

func (s *Server) setFaults(f Faults) {
	if f.LatencyMultiplier == 0 {
		f.LatencyMultiplier = 1
	}
	s.faults.Store(&f)
	s.eng.SetLatencyMultiplier(f.LatencyMultiplier)
}

// Faults returns the current fault settings.
func (s *Server) Faults() Faults { return *s.faults.Load() }

// serveFaults: GET returns the settings, PUT or POST replaces them with a
// JSON object of the same shape (unknown fields are errors).
func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
	case http.MethodPut, http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil {
			writeError(w, badRequest("", "reading body: %v", err))
			return
		}
		var f Faults
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			writeError(w, badRequest("", "faults: expected {error_rate, latency_multiplier, metrics_delay_ms, metrics_error_rate}, found: %v", err))
			return
		}
		if err := s.SetFaults(f); err != nil {
			writeError(w, badRequest("", "%v", err))
			return
		}
	default:
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "MethodNotAllowed", message: "expected GET, PUT or POST, found " + r.Method})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.Faults())
}

// serveCrash: POST /admin/crash[?restart_after=5s] answers 202, then crashes
// the server; without restart_after it stays down until the process ends.
func (s *Server) serveCrash(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "MethodNotAllowed", message: "expected POST, found " + r.Method})
		return
	}
	var after time.Duration
	if v := r.URL.Query().Get("restart_after"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, badRequest("restart_after", "restart_after: expected a duration such as 5s, found %q", v))
			return
		}
		after = d
	}
	w.WriteHeader(http.StatusAccepted)
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	go s.Crash(after)
}
