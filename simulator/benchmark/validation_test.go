package benchmark

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/fastepp/fastepp/simulator/engine"
)

func loadTable(t *testing.T) []Row {
	t.Helper()
	text, err := os.ReadFile("../testdata/validation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ParseTable(text)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestValidationTable runs every published measurement of
// testdata/validation.yaml through the `simulator bench latency` code path
// and fails when a row's error exceeds its bound (15% at batch ≤ 8, 25%
// otherwise). Calibration rows and validation rows are reported apart, and
// at most half the rows may be calibration rows.
func TestValidationTable(t *testing.T) {
	rows := loadTable(t)
	p, err := engine.AllProfiles()
	if err != nil {
		t.Fatal(err)
	}
	calibration := 0
	for _, r := range rows {
		if r.Role == "calibration" {
			calibration++
		}
	}
	if 2*calibration > len(rows) {
		t.Errorf("%d of %d rows are calibration rows: expected at most half", calibration, len(rows))
	}
	var report strings.Builder
	for _, role := range []string{"calibration", "validation"} {
		var sumAbs float64
		n := 0
		fmt.Fprintf(&report, "\n%s rows:\n", role)
		for _, r := range rows {
			if r.Role != role {
				continue
			}
			res, err := RunRow(p, r, 2)
			if err != nil {
				t.Errorf("%s: %v", r.Name, err)
				continue
			}
			fmt.Fprintf(&report, "  %-40s measured %9.1f ms  simulated %9.1f ms  error %+6.1f%%  (bound ±%.0f%%)\n",
				r.Name, r.MeasuredMS, res.SimulatedMS, 100*res.Error, 100*r.Bound())
			if !res.Within() {
				t.Errorf("%s (%s): simulated %.1f ms vs measured %.1f ms: error %+.1f%%, expected within ±%.0f%%",
					r.Name, role, res.SimulatedMS, r.MeasuredMS, 100*res.Error, 100*r.Bound())
			}
			sumAbs += math.Abs(res.Error)
			n++
		}
		if n > 0 {
			fmt.Fprintf(&report, "  mean |error| %.1f%% over %d rows\n", 100*sumAbs/float64(n), n)
		}
	}
	t.Log(report.String())
}

func TestParseTableErrors(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"unknown field", "rows:\n  - name: a\n    colour: red\n", "field colour not found"},
		{"bad role", "rows:\n  - name: a\n    role: tuned\n    measured_ms: 1\n    source: s\n", "role: expected calibration or validation, found \"tuned\""},
		{"duplicate", "rows:\n  - {name: a, role: validation, measured_ms: 1, source: s}\n  - {name: a, role: validation, measured_ms: 1, source: s}\n", "expected a unique name"},
		{"no measurement", "rows:\n  - {name: a, role: validation, source: s}\n", "measured_ms: expected > 0, found 0"},
		{"no source", "rows:\n  - {name: a, role: validation, measured_ms: 3}\n", "source: expected where"},
	}
	for _, c := range cases {
		if _, err := ParseTable([]byte(c.text)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}
