package extproc

import (
	"bytes"
)

// usageScanner finds token usage in a response body fed chunk by chunk: a
// JSON response's "usage" object or the SSE chunk whose "usage" is not null.
// The last non-null usage wins. It keeps at most maxUsageBytes of state.
type usageScanner struct {
	state uint8
	tail  [len(usageKey) - 1]byte // end of the previous chunk, for keys split across chunks
	ntail int
	obj   []byte // the usage object being captured
	depth int
	inStr bool
	esc   bool

	found      bool
	prompt     int64
	completion int64
}

const (
	usSearch = iota // looking for "usage"
	usColon         // after the key: whitespace then ':'
	usValue         // after the colon: whitespace then '{' or anything else
	usObject        // inside the usage object
)

const (
	usageKey      = `"usage"`
	maxUsageBytes = 4096
)

func (u *usageScanner) reset() {
	obj := u.obj[:0]
	*u = usageScanner{obj: obj}
}

// feed scans one response body chunk.
func (u *usageScanner) feed(c []byte) {
	i := 0
	for i < len(c) {
		switch u.state {
		case usSearch:
			// A key split across the previous chunk and this one.
			if u.ntail > 0 {
				var win [2*len(usageKey) - 2]byte
				n := copy(win[:], u.tail[:u.ntail])
				n += copy(win[n:], c[i:min(len(c), i+len(usageKey)-1)])
				if k := bytes.Index(win[:n], []byte(usageKey)); k >= 0 && k < u.ntail {
					i += k + len(usageKey) - u.ntail
					u.ntail = 0
					u.state = usColon
					continue
				}
				u.ntail = 0
			}
			k := bytes.Index(c[i:], []byte(usageKey))
			if k < 0 {
				// Keep the end of the chunk: it may start a split key.
				t := c[max(i, len(c)-len(u.tail)):]
				u.ntail = copy(u.tail[:], t)
				return
			}
			i += k + len(usageKey)
			u.state = usColon
		case usColon:
			switch c[i] {
			case ' ', '\t', '\n', '\r':
			case ':':
				u.state = usValue
			default:
				u.state = usSearch
				continue
			}
			i++
		case usValue:
			switch c[i] {
			case ' ', '\t', '\n', '\r':
				i++
			case '{':
				u.obj = append(u.obj[:0], '{')
				u.depth, u.inStr, u.esc = 1, false, false
				u.state = usObject
				i++
			default: // null or anything else: not a usage object
				u.state = usSearch
			}
		case usObject:
			start := i
			for i < len(c) && u.depth > 0 {
				b := c[i]
				i++
				switch {
				case u.esc:
					u.esc = false
				case u.inStr:
					if b == '\\' {
						u.esc = true
					} else if b == '"' {
						u.inStr = false
					}
				case b == '"':
					u.inStr = true
				case b == '{':
					u.depth++
				case b == '}':
					u.depth--
				}
			}
			if len(u.obj)+i-start > maxUsageBytes {
				u.state = usSearch
				continue
			}
			u.obj = append(u.obj, c[start:i]...)
			if u.depth == 0 {
				u.parse()
				u.state = usSearch
			}
		}
	}
}

// parse reads prompt_tokens and completion_tokens from the captured object.
func (u *usageScanner) parse() {
	p, okp := intField(u.obj, `"prompt_tokens"`)
	c, okc := intField(u.obj, `"completion_tokens"`)
	if okp || okc {
		u.found, u.prompt, u.completion = true, p, c
	}
}

// intField finds `"key": <integer>` in obj.
func intField(obj []byte, key string) (int64, bool) {
	k := bytes.Index(obj, []byte(key))
	if k < 0 {
		return 0, false
	}
	i := k + len(key)
	for i < len(obj) && (obj[i] == ' ' || obj[i] == '\t' || obj[i] == '\n' || obj[i] == '\r') {
		i++
	}
	if i >= len(obj) || obj[i] != ':' {
		return 0, false
	}
	i++
	for i < len(obj) && (obj[i] == ' ' || obj[i] == '\t' || obj[i] == '\n' || obj[i] == '\r') {
		i++
	}
	var n int64
	start := i
	for i < len(obj) && isDigit(obj[i]) && i-start < 18 {
		n = n*10 + int64(obj[i]-'0')
		i++
	}
	return n, i > start
}

// modelRestorer rewrites `"model":"<target>"` back to the client's original
// model in response chunks, holding back a chunk's end when it may begin a
// match that the next chunk completes.
type modelRestorer struct {
	on   bool
	pats [2][]byte // `"model":<target>` and `"model": <target>`
	reps [2][]byte // the same with the original model token
	hold []byte
	out  []byte
}

func (r *modelRestorer) active() bool { return r.on }

// set prepares the restorer; targetTok and origTok are JSON string tokens
// with quotes.
func (r *modelRestorer) set(targetTok, origTok []byte) {
	for i, pre := range [2]string{`"model":`, `"model": `} {
		r.pats[i] = append(append(r.pats[i][:0], pre...), targetTok...)
		r.reps[i] = append(append(r.reps[i][:0], pre...), origTok...)
	}
	r.hold = r.hold[:0]
	r.on = true
}

func (r *modelRestorer) reset() {
	r.on = false
	r.pats[0], r.pats[1] = r.pats[0][:0], r.pats[1][:0]
	r.reps[0], r.reps[1] = r.reps[0][:0], r.reps[1][:0]
	r.hold = r.hold[:0]
}

// lengthChanges reports whether restoring changes the body length.
func (r *modelRestorer) lengthChanges() bool { return len(r.pats[0]) != len(r.reps[0]) }

// process returns the chunk with the original model restored. The result is
// valid until the next call.
func (r *modelRestorer) process(c []byte, eos bool) []byte {
	if !r.on || len(r.pats[0]) == 0 || len(r.pats[1]) == 0 {
		return c // an empty pattern would match everywhere without progress
	}
	in := c
	if len(r.hold) > 0 {
		r.hold = append(r.hold, c...)
		in = r.hold
	}
	out := r.out[:0]
	changed := false
	i := 0
	for {
		k := bytes.Index(in[i:], []byte(`"model":`))
		if k < 0 {
			break
		}
		k += i
		matched := false
		for p := range r.pats {
			if bytes.HasPrefix(in[k:], r.pats[p]) {
				out = append(out, in[i:k]...)
				out = append(out, r.reps[p]...)
				i = k + len(r.pats[p])
				matched, changed = true, true
				break
			}
		}
		if !matched {
			if !eos && r.incomplete(in[k:]) {
				// A match may complete in the next chunk: hold from here.
				out = append(out, in[i:k]...)
				i = k
				break
			}
			out = append(out, in[i:k+1]...)
			i = k + 1
		}
	}
	keep := 0
	if !eos {
		keep = r.partial(in[i:])
	}
	if !changed && keep == 0 && len(r.hold) == 0 {
		r.out = out
		return c
	}
	out = append(out, in[i:len(in)-keep]...)
	r.out = out
	tail := in[len(in)-keep:]
	if keep > 0 {
		// tail may alias r.hold: move it to the front.
		r.hold = append(r.hold[:0], tail...)
	} else {
		r.hold = r.hold[:0]
	}
	return out
}

// incomplete reports whether b is a proper prefix of a pattern.
func (r *modelRestorer) incomplete(b []byte) bool {
	for _, p := range r.pats {
		if len(b) < len(p) && bytes.HasPrefix(p, b) {
			return true
		}
	}
	return false
}

// partial returns the length of the longest suffix of b that is a proper
// prefix of a pattern.
func (r *modelRestorer) partial(b []byte) int {
	best := 0
	for _, p := range r.pats {
		for n := min(len(b), len(p)-1); n > best; n-- {
			if bytes.Equal(b[len(b)-n:], p[:n]) {
				best = n
				break
			}
		}
	}
	return best
}
