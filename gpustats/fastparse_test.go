package gpustats

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// fastPages are pages parseSimple must read exactly as ParseExporter does,
// or hand over (errNotSimple).
var fastPages = []string{
	amdPage, dcgmPage, amdPage + dcgmPage, "",
	"gpu_clock{gpu_id=\"0\"} NaN\n", "gpu_gfx_activity{gpu_id=\"-1\"} 1\n",
	"DCGM_FI_DEV_FB_FREE{gpu=\"0\"} 1e308\nDCGM_FI_DEV_FB_USED{gpu=\"0\"} 1e308\n",
	"# TYPE gpu_gfx_activity counter\ngpu_gfx_activity{gpu_id=\"3\"} 1\n",
	"# TYPE gpu_gfx_activity summary\ngpu_gfx_activity{gpu_id=\"3\",quantile=\"0.5\"} 1\n",
	"gpu_gfx_activity{gpu_id=\"0\",pod=\"a\\\"b\"} 5\n",
	"gpu_gfx_activity{gpu_id=\"0\",} 5 1700000000000\n",
	"gpu_gfx_activity{gpu_id=\"0\"} +Inf\ngpu_power_usage{gpu_id=\"0\"} 7\n",
	"gpu_gfx_activity{gpu_id=\"x\"} 5\n",
	"gpu_gfx_activity {gpu_id=\"0\"} 5\n",
	"other_metric{a=\"b\"} 1\nother_metric{a=\"b\"} 2\n",
	"gpu_gfx_activity{gpu_id=\"0\"}\n",
	"{\"quoted.name\",gpu_id=\"0\"} 1\n",
}

// TestParseSimpleMatchesExpfmt: on every page parseSimple takes, it returns
// what expfmt's parse returns (GPUs and whether there was an error).
func TestParseSimpleMatchesExpfmt(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteExporter(&buf, DemoGPUs(), "node-1"); err != nil {
		t.Fatal(err)
	}
	taken := 0
	for _, page := range append(fastPages, buf.String()) {
		fast, ferr := parseSimple([]byte(page), fixedNow)
		if ferr == errNotSimple {
			continue
		}
		taken++
		slow, serr := ParseExporter(strings.NewReader(page), fixedNow)
		if serr != nil && len(slow) == 0 {
			// expfmt refused the page: the fast path must not invent GPUs.
			if len(fast) != 0 {
				t.Errorf("page %q: fast path found %d GPUs, expfmt refused it: %v", page, len(fast), serr)
			}
			continue
		}
		if (ferr != nil) != (serr != nil) || !reflect.DeepEqual(fast, slow) {
			t.Errorf("page %q:\nfast %+v (%v)\nexpfmt %+v (%v)", page, fast, ferr, slow, serr)
		}
	}
	if taken < 5 {
		t.Errorf("the fast path took only %d pages", taken)
	}
	// What parsePage returns is what ParseExporter returns on every page.
	for _, page := range fastPages {
		got, gerr := parsePage([]byte(page), fixedNow)
		want, werr := ParseExporter(strings.NewReader(page), fixedNow)
		if werr == nil && (gerr != nil || !reflect.DeepEqual(got, want)) {
			t.Errorf("parsePage %q: %+v (%v), want %+v", page, got, gerr, want)
		}
	}
}

// FuzzParseSimple: the fast path never panics, and a page it takes parses
// to the same GPUs with expfmt, identity labels aside (go test -fuzz
// FuzzParseSimple ./gpustats).
func FuzzParseSimple(f *testing.F) {
	for _, s := range fastPages {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, page string) {
		fast, ferr := parseSimple([]byte(page), fixedNow)
		if ferr == errNotSimple {
			return
		}
		slow, serr := ParseExporter(strings.NewReader(page), fixedNow)
		// A GPU whose series disagree on pod, product or serial takes the
		// first one's: expfmt's order is a map's, so compare the rest.
		for _, gs := range [][]GPU{fast, slow} {
			for i := range gs {
				gs[i].Pod, gs[i].Namespace, gs[i].Product, gs[i].UniqueID = "", "", "", ""
			}
		}
		if serr == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("page %q:\nfast %+v (%v)\nexpfmt %+v", page, fast, ferr, slow)
		}
	})
}
