package bench

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// WriteTable prints the scenario, one row per strategy and stage, and the
// comparison at the top stage.
func (res *Result) WriteTable(w io.Writer, sum *Summary) {
	sc := res.Scenario
	fmt.Fprintf(w, "\nscenario %s: %s\n", sc.Name, sc.FleetLine())
	fmt.Fprintf(w, "  workload: %s\n  ladder:   %s\n", sc.WorkloadLine(), sc.LadderLine())
	if res.Repeats > 1 {
		fmt.Fprintf(w, "  %d repeats per strategy (seeds %d..%d): medians, [min–max] over repeats\n", res.Repeats,
			firstSeed(res), firstSeed(res)+int64(res.Repeats-1))
	}
	fmt.Fprintln(w)
	head := []string{"strategy", "stage", "req/s", "done", "TTFT p50", "TTFT p90", "TTFT p99", "TPOT p90", "E2E p90",
		"out tok/s", "goodput/s", "hit %", "err", "req per server", "cpu"}
	rows := [][]string{head}
	limited := false
	for _, s := range sum.Strategies {
		for _, st := range s.Stages {
			p90 := secs(st.TTFT.P90)
			tok := fmt.Sprintf("%.0f", st.OutputTokensPerSecond)
			if st.Spread != nil {
				p90 += " [" + secsShort(st.Spread.TTFTP90[0]) + "–" + secsShort(st.Spread.TTFTP90[1]) + "]"
				tok += fmt.Sprintf(" [%.0f–%.0f]", st.Spread.OutputTokensPerSecond[0], st.Spread.OutputTokensPerSecond[1])
			}
			cpu := fmt.Sprintf("%.0f%%", 100*st.Machine.CPUCores/float64(max(1, st.Machine.Cores)))
			if st.Machine.Limited {
				cpu += " !"
				limited = true
			}
			rows = append(rows, []string{s.Name, fmt.Sprint(st.Index), trimFloat(st.Rate), fmt.Sprint(st.Completed),
				secs(st.TTFT.P50), p90, secs(st.TTFT.P99), secs(st.TPOT.P90), secs(st.E2E.P90), tok,
				fmt.Sprintf("%.2f", st.GoodputRequestsPerSecond), fmt.Sprintf("%.0f", 100*st.PrefixCacheHitRatio),
				fmt.Sprint(st.Errors), balance(st.PerEndpointRequests), cpu})
		}
		rows = append(rows, nil)
	}
	printRows(w, rows)
	fmt.Fprintln(w, "TTFT/TPOT/E2E percentiles of the requests sent in each stage; out tok/s and goodput over the stage's send window")
	fmt.Fprintln(w, "(longer when its requests finished later); hit % = prefix-cache hits ÷ prompt tokens across the fleet;")
	fmt.Fprintln(w, "req per server = min–max requests finished per server; cpu = this process (fleet + picker + gateway + loadgen) ÷ cores.")
	if limited {
		fmt.Fprintln(w, "! = the machine limited this stage (CPU ≥ 90%, loadgen schedule delay p99 ≥ 50 ms, or simulator lag ≥ 2%): read it with care.")
	}
	for _, line := range Compare(sum) {
		fmt.Fprintln(w, line)
	}
}

func firstSeed(res *Result) int64 {
	for _, runs := range res.Runs {
		if len(runs) > 0 {
			return runs[0].Seed
		}
	}
	return 0
}

// Compare states epp against the other strategies at the top stage (the
// issue's targets), when epp and they ran.
func Compare(sum *Summary) []string {
	by := map[string]*StrategySummary{}
	for i := range sum.Strategies {
		by[sum.Strategies[i].Name] = &sum.Strategies[i]
	}
	epp := by["epp"]
	if epp == nil || len(epp.Stages) == 0 {
		return nil
	}
	top := len(epp.Stages) - 1
	e := epp.Stages[top]
	out := []string{"", fmt.Sprintf("top stage (%s req/s), epp against:", trimFloat(e.Rate))}
	for _, s := range sum.Strategies {
		if s.Name == "epp" || len(s.Stages) <= top {
			continue
		}
		o := s.Stages[top]
		out = append(out, fmt.Sprintf("  %-16s TTFT p90 %s vs %s (%s), output tok/s %.0f vs %.0f (%s)", s.Name,
			secs(e.TTFT.P90), secs(o.TTFT.P90), lowerHigher(e.TTFT.P90, o.TTFT.P90), e.OutputTokensPerSecond, o.OutputTokensPerSecond,
			ratio(e.OutputTokensPerSecond, o.OutputTokensPerSecond)))
	}
	return out
}

// lowerHigher says how epp's latency e compares with another's o.
func lowerHigher(e, o float64) string {
	switch {
	case e <= 0 || o <= 0:
		return "n/a"
	case o >= e:
		return fmt.Sprintf("%.2f× lower", o/e)
	default:
		return fmt.Sprintf("%.2f× higher", e/o)
	}
}

func ratio(a, b float64) string {
	if b <= 0 || math.IsNaN(a/b) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// balance is "min–max" of the requests per server.
func balance(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var v []int64
	for _, n := range m {
		v = append(v, n)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return fmt.Sprintf("%d–%d", v[0], v[len(v)-1])
}

func secs(s float64) string {
	switch {
	case s <= 0:
		return "-"
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	case s < 100:
		return fmt.Sprintf("%.2fs", s)
	default:
		return fmt.Sprintf("%.0fs", s)
	}
}

func secsShort(s float64) string {
	switch {
	case s <= 0:
		return "-"
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	default:
		return fmt.Sprintf("%.1fs", s)
	}
}

// printRows prints rows in aligned columns (first two left-aligned); a nil
// row is a blank line.
func printRows(w io.Writer, rows [][]string) {
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		if r == nil {
			fmt.Fprintln(w)
			continue
		}
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i < 1 {
				b.WriteString(c + pad)
			} else {
				b.WriteString(pad + c)
			}
			if i < len(r)-1 {
				b.WriteString("  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
