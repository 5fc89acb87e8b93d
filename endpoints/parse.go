package endpoints

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"unsafe"
)

// pageParser scans a Prometheus text-format (0.0.4) page and feeds the
// samples of an engine's families to an accumulator. It tokenizes metric
// names, label names and label values exactly as expfmt's TextParser does
// (quoted UTF-8 names, names inside braces, escapes), so that on every page
// expfmt accepts it extracts the same values; lines of other families are
// skipped after their name. It is lenient where expfmt is strict about lines
// it does not need. Reuse one per endpoint: it keeps its scratch space.
type pageParser struct {
	// other holds the families whose # TYPE line says summary or histogram:
	// their samples carry no plain value and are skipped.
	other  famSet
	labels []label
	name   []byte // scratch for quoted/escaped names
	// skip is the last unquoted sample name read that no family of the
	// engine reads (it aliases the page being parsed): the lines of a
	// histogram come in runs of one name, and comparing a run's next line
	// with it is cheaper than reading the name again.
	skip []byte
}

// parse extracts e's families from data into acc (after acc.reset(e)).
// It returns an error only for malformed lines of the wanted families.
func (p *pageParser) parse(data []byte, e *engine, acc *accumulator) error {
	acc.reset(e)
	p.other = 0
	defer func() { p.skip = nil }() // it points into data
	i := 0
	for i < len(data) {
		j := skipBlank(data, i)
		if j >= len(data) {
			break
		}
		var err error
		switch data[j] {
		case '\n':
			i = j + 1
			continue
		case '#':
			i = p.comment(data, j+1, e)
			continue
		case '{':
			i, err = p.sample(data, j, true, e, acc)
		default:
			i, err = p.sample(data, j, false, e, acc)
		}
		if err != nil {
			return fmt.Errorf("metrics page line %d: %w", lineOf(data, j), err)
		}
	}
	return nil
}

// comment handles a line after its '#': only "# TYPE <wanted name> <type>"
// matters.
func (p *pageParser) comment(data []byte, k int, e *engine) int {
	k = skipBlank(data, k)
	start := k
	for k < len(data) && !isBlank(data[k]) && data[k] != '\n' {
		k++
	}
	if k >= len(data) || data[k] == '\n' || string(data[start:k]) != "TYPE" {
		return nextLine(data, k)
	}
	k = skipBlank(data, k)
	name, k, ok := p.readName(data, k, true)
	if !ok || k >= len(data) || !isBlank(data[k]) {
		return nextLine(data, k)
	}
	fs := e.lookup(name)
	if fs == 0 {
		return nextLine(data, k)
	}
	k = skipBlank(data, k)
	end := k
	for end < len(data) && data[end] != '\n' {
		end++
	}
	if k < end {
		p.other &^= fs
		typ := strings.TrimRight(bstr(data[k:end]), " \t")
		for _, other := range [...]string{"summary", "histogram", "gauge_histogram", "gaugehistogram"} {
			if strings.EqualFold(typ, other) {
				p.other |= fs
			}
		}
	}
	return nextLine(data, end)
}

// sample handles a sample line starting at data[k] (a name, or '{' when the
// name is inside the braces). It returns where the next line starts.
func (p *pageParser) sample(data []byte, k int, inBraces bool, e *engine, acc *accumulator) (int, error) {
	var name []byte
	p.labels = p.labels[:0]
	if !inBraces {
		if n := len(p.skip); n > 0 && len(data)-k > n && string(data[k:k+n]) == string(p.skip) &&
			!nameCont(data[k+n], true) && data[k+n] != '"' {
			return nextLine(data, k+n), nil // what readName would return: p.skip again
		}
		var ok bool
		if name, k, ok = p.readName(data, k, true); !ok || len(name) == 0 {
			return nextLine(data, k), nil
		}
		all := e.lookup(name)
		if all == 0 && k < len(data) && data[k] != '"' && &name[0] == &data[k-len(name)] {
			p.skip = name
		}
		fs := all &^ p.other
		if fs == 0 {
			return nextLine(data, k), nil
		}
		k = skipBlank(data, k)
		if k < len(data) && data[k] == '{' {
			var err error
			if name, k, err = p.readLabels(data, k+1, name, false); err != nil {
				return nextLine(data, k), fmt.Errorf("%s: %w", e.specs[e.first(fs)].name, err)
			}
		}
	} else {
		var err error
		if name, k, err = p.readLabels(data, k+1, nil, true); err != nil {
			return nextLine(data, k), nil // name unknown: not ours to judge
		}
	}
	fs := e.lookup(name) &^ p.other
	if fs == 0 {
		return nextLine(data, k), nil
	}
	start := k
	for k < len(data) && !isBlank(data[k]) && data[k] != '\n' {
		k++
	}
	v, err := parseFloat(data[start:k])
	if err != nil {
		return nextLine(data, k), fmt.Errorf("%s: expected a float sample value, found %q", e.specs[e.first(fs)].name, data[start:k])
	}
	for f := famWaiting; f < famCount; f++ {
		if fs.has(f) && e.specs[f].matches(p.labels) {
			acc.add(f, v, p.labels)
		}
	}
	return nextLine(data, k), nil
}

// readLabels reads label pairs after '{' up to '}' and the blanks after it,
// appending them to p.labels. Inside braces a bare (or quoted) token is the
// metric name. It returns the metric name and the index after the blanks.
func (p *pageParser) readLabels(data []byte, k int, name []byte, inBraces bool) ([]byte, int, error) {
	for {
		k = skipBlank(data, k)
		if k >= len(data) {
			return name, k, errEOL
		}
		if data[k] == '}' {
			if name == nil {
				return name, k, fmt.Errorf("expected a metric name in braces, found none")
			}
			return name, skipBlank(data, k+1), nil
		}
		ln, k2, ok := p.readName(data, k, false)
		k = k2
		if !ok || len(ln) == 0 {
			return name, k, fmt.Errorf("expected a label name, found %q", clip(data, k))
		}
		k = skipBlank(data, k)
		if k >= len(data) {
			return name, k, errEOL
		}
		if data[k] != '=' {
			if !inBraces || name != nil || (data[k] != ',' && data[k] != '}') {
				return name, k, fmt.Errorf("expected '=' after label name %q, found %q", ln, clip(data, k))
			}
			name = ln
			if data[k] == ',' {
				k++
				continue
			}
			return name, skipBlank(data, k+1), nil
		}
		k = skipBlank(data, k+1)
		if k >= len(data) || data[k] != '"' {
			return name, k, fmt.Errorf("expected '\"' to start the value of label %q, found %q", ln, clip(data, k))
		}
		val, k3, err := readLabelValue(data, k+1)
		k = k3
		if err != nil {
			return name, k, fmt.Errorf("label %q: %w", ln, err)
		}
		p.labels = append(p.labels, label{name: ln, value: val})
		k = skipBlank(data, k)
		if k >= len(data) {
			return name, k, errEOL
		}
		switch data[k] {
		case ',':
			k++
		case '}':
			if name == nil {
				return name, k, fmt.Errorf("expected a metric name in braces, found none")
			}
			return name, skipBlank(data, k+1), nil
		default:
			return name, k, fmt.Errorf("expected ',' or '}' after the value of label %q, found %q", ln, clip(data, k))
		}
	}
}

var errEOL = fmt.Errorf("expected '}', found the end of the line")

// readName reads a metric name (metric=true: ':' allowed) or a label name
// starting at data[k], as expfmt does: [a-zA-Z_:] then [a-zA-Z0-9_:], with
// double-quoted UTF-8 sections and the escapes \\ \n \". ok is false on a
// malformed name. The token aliases data unless quotes were involved.
func (p *pageParser) readName(data []byte, k int, metric bool) (tok []byte, end int, ok bool) {
	if k >= len(data) || !nameStart(data[k], metric) {
		return nil, k, true
	}
	start := k
	for k < len(data) && nameCont(data[k], metric) {
		k++
	}
	if k >= len(data) || data[k] != '"' {
		if k > start && data[start] != '"' {
			return data[start:k], k, true
		}
	}
	// Slow path: quotes. Replay from the start like expfmt.
	buf := make([]byte, 0, 32)
	quoted, escaped := false, false
	for k = start; k < len(data); {
		b := data[k]
		if escaped {
			switch b {
			case '\\':
				buf = append(buf, '\\')
			case 'n':
				buf = append(buf, '\n')
			case '"':
				buf = append(buf, '"')
			default:
				return buf, k, false
			}
			escaped = false
		} else {
			switch b {
			case '"':
				quoted = !quoted
				if !quoted {
					return buf, k + 1, true
				}
			case '\n':
				return buf, k, false
			case '\\':
				escaped = true
			default:
				buf = append(buf, b)
			}
		}
		k++
		if k >= len(data) || !(quoted || nameCont(data[k], metric) || data[k] == '"') {
			break
		}
	}
	return buf, k, !quoted && !escaped
}

// readLabelValue reads a label value after its opening quote, returning the
// unescaped value and the index after the closing quote.
func readLabelValue(data []byte, k int) ([]byte, int, error) {
	start := k
	for k < len(data) {
		switch data[k] {
		case '"':
			return data[start:k], k + 1, nil
		case '\\', '\n':
			goto slow
		}
		k++
	}
	return nil, k, fmt.Errorf("expected a closing '\"', found the end of the page")
slow:
	buf := append(make([]byte, 0, k-start+16), data[start:k]...)
	for ; k < len(data); k++ {
		switch b := data[k]; b {
		case '"':
			return buf, k + 1, nil
		case '\n':
			return nil, k, fmt.Errorf("expected a closing '\"', found a new line")
		case '\\':
			k++
			if k >= len(data) {
				return nil, k, fmt.Errorf("expected an escape after '\\', found the end of the page")
			}
			switch data[k] {
			case '"', '\\':
				buf = append(buf, data[k])
			case 'n':
				buf = append(buf, '\n')
			default:
				return nil, k, fmt.Errorf("expected one of \\\\ \\\" \\n, found \\%c", data[k])
			}
		default:
			buf = append(buf, b)
		}
	}
	return nil, k, fmt.Errorf("expected a closing '\"', found the end of the page")
}

func nameStart(b byte, metric bool) bool {
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || b == '_' || b == '"' || (metric && b == ':')
}

// nameCont reports an unquoted continuation byte (the quote is handled apart).
func nameCont(b byte, metric bool) bool {
	return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') || b == '_' || (metric && b == ':')
}

func isBlank(b byte) bool { return b == ' ' || b == '\t' }

func skipBlank(data []byte, k int) int {
	for k < len(data) && isBlank(data[k]) {
		k++
	}
	return k
}

func nextLine(data []byte, k int) int {
	if k >= len(data) {
		return len(data)
	}
	if i := bytes.IndexByte(data[k:], '\n'); i >= 0 {
		return k + i + 1
	}
	return len(data)
}

func lineOf(data []byte, k int) int {
	if k > len(data) {
		k = len(data)
	}
	return bytes.Count(data[:k], []byte{'\n'}) + 1
}

// clip returns a short excerpt of data at k for error messages.
func clip(data []byte, k int) string {
	if k >= len(data) {
		return "end of page"
	}
	end := min(k+20, len(data))
	if i := bytes.IndexByte(data[k:end], '\n'); i >= 0 {
		end = k + i
	}
	return string(data[k:end])
}

// parseFloat parses a sample value like expfmt (no hex exponents or '_').
func parseFloat(b []byte) (float64, error) {
	if bytes.ContainsAny(b, "pP_") || len(b) == 0 {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseFloat(bstr(b), 64)
}

// bstr views b as a string for a call that does not retain it.
func bstr(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
