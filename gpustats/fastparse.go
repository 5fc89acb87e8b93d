package gpustats

import (
	"bytes"
	"errors"
	"strconv"
	"time"
)

// errNotSimple makes parseSimple hand a page to expfmt.
var errNotSimple = errors.New("not a simple page")

// parseSimple parses the common shape of an exporter page without expfmt
// (endpoints.BenchmarkGPUScrape64, 64 pages a second: ~1.1% of a core with
// expfmt, ~0.7-0.8% with this): lines
// `name{label="value",...} value [timestamp]`, `# HELP` and `# TYPE` comments,
// blank lines. Anything else (quoted metric names, histogram or summary types
// on a family it reads, a malformed line) returns errNotSimple, and the
// caller parses the page with expfmt instead, which also reports the errors.
func parseSimple(page []byte, now time.Time) ([]GPU, error) {
	b := &gpuSet{byKey: map[string]*GPU{}, now: now}
	var errs []error
	lb := map[string]string{}
	for len(page) > 0 {
		var line []byte
		if i := bytes.IndexByte(page, '\n'); i >= 0 {
			line, page = page[:i], page[i+1:]
		} else {
			line, page = page, nil
		}
		line = bytes.TrimRight(line, " \t\r")
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 {
			continue
		}
		if line[0] == '#' {
			f := bytes.Fields(line)
			if len(f) >= 4 && string(f[1]) == "TYPE" && known(string(f[2])) {
				switch string(f[3]) {
				case "gauge", "counter", "untyped":
				default:
					return nil, errNotSimple
				}
			}
			continue
		}
		n := 0
		for n < len(line) && isNameByte(line[n], n == 0) {
			n++
		}
		if n == 0 {
			return nil, errNotSimple
		}
		name := line[:n]
		rest := line[n:]
		read := known(string(name))
		clear(lb)
		if len(rest) > 0 && rest[0] == '{' {
			var ok bool
			if rest, ok = parseLabels(rest[1:], lb, read); !ok {
				return nil, errNotSimple
			}
		}
		if len(rest) == 0 || (rest[0] != ' ' && rest[0] != '\t') {
			return nil, errNotSimple
		}
		f := bytes.Fields(rest)
		if len(f) < 1 || len(f) > 2 {
			return nil, errNotSimple
		}
		v, err := strconv.ParseFloat(string(f[0]), 64)
		if err != nil {
			return nil, errNotSimple
		}
		if !read || v != v || v > maxFloat || v < -maxFloat {
			continue
		}
		nm := string(name)
		if nm[0] == 'g' {
			err = b.amd(nm, lb, v)
		} else {
			err = b.dcgm(nm, lb, v)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return b.finish(), errors.Join(errs...)
}

const maxFloat = 1.7976931348623157e308

// known reports whether name is a family the exporter source reads.
func known(name string) bool {
	switch name {
	case AMDGfxActivity, AMDUmcActivity, AMDUsedVRAM, AMDTotalVRAM, AMDFreeVRAM, AMDPowerUsage, AMDPackagePower,
		AMDJunctionTemp, AMDEdgeTemp, AMDMemoryTemp, AMDClock,
		DCGMGPUUtil, DCGMGrEngineActive, DCGMMemCopyUtil, DCGMFBUsed, DCGMFBFree, DCGMPowerUsage, DCGMPowerLimit,
		DCGMGPUTemp, DCGMMemoryTemp, DCGMSMClock, DCGMMemClock:
		return true
	}
	return false
}

func isNameByte(c byte, first bool) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
}

// parseLabels reads `k="v",...}` into lb (when keep) and returns what
// follows the closing brace.
func parseLabels(s []byte, lb map[string]string, keep bool) ([]byte, bool) {
	for {
		for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
			s = s[1:]
		}
		if len(s) > 0 && s[0] == '}' {
			return s[1:], true
		}
		n := 0
		for n < len(s) && isNameByte(s[n], n == 0) && s[n] != ':' {
			n++
		}
		if n == 0 || n+1 >= len(s) || s[n] != '=' || s[n+1] != '"' {
			return nil, false
		}
		key := s[:n]
		s = s[n+2:]
		var val []byte
		esc := false
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if c == '\\' {
				esc = true
				break
			}
			if c == '"' {
				break
			}
		}
		if esc {
			return nil, false // escaped values are rare: leave them to expfmt
		}
		if i >= len(s) {
			return nil, false
		}
		val, s = s[:i], s[i+1:]
		if keep {
			if _, dup := lb[string(key)]; dup {
				return nil, false
			}
			lb[string(key)] = string(val)
		}
		for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
			s = s[1:]
		}
		if len(s) > 0 && s[0] == ',' {
			s = s[1:]
			continue
		}
		if len(s) > 0 && s[0] == '}' {
			return s[1:], true
		}
		return nil, false
	}
}
