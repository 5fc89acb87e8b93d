package extproc

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/fastepp/fastepp/scheduler"
)

// api is the OpenAI endpoint a request targets, from its path. It decides
// which body field holds the prompt.
type api uint8

const (
	apiUnknown     api = iota // any of prompt / messages / input
	apiCompletions            // prompt
	apiChat                   // messages
	apiResponses              // input
	apiEmbeddings             // input
)

// defaultPath is assumed when the request carries no path header.
const defaultPath = "/v1/completions"

// apiOf classifies a request path (query string ignored).
func apiOf(path string) api {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		return apiChat
	case strings.HasSuffix(path, "/completions"):
		return apiCompletions
	case strings.HasSuffix(path, "/responses"):
		return apiResponses
	case strings.HasSuffix(path, "/embeddings"):
		return apiEmbeddings
	}
	return apiUnknown
}

// Prompt fields, in the precedence used when the path does not say which one
// applies (messages, then prompt, then input).
const (
	fMessages = iota
	fPrompt
	fInput
	numPromptFields
)

var promptFieldNames = [numPromptFields]string{"messages", "prompt", "input"}

// bodyInfo is what one scan of a request body finds. Spans index the scanned
// bytes. It is reused across requests (reset keeps slice capacity).
type bodyInfo struct {
	// modelTok is the model's JSON string token including its quotes (the
	// bytes a rewrite replaces); model is its content.
	modelTok  scheduler.Span
	hasModel  bool
	modelEsc  bool // the model string contains escapes
	modelType string

	stream       bool
	includeUsage bool

	cacheSalt    scheduler.Span // raw content of the cache_salt string
	hasCacheSalt bool

	// spans per prompt field: string contents (raw JSON bytes between the
	// quotes), runs of token ids, or raw token-id arrays.
	spans    [numPromptFields][]scheduler.Span
	present  [numPromptFields]bool
	fieldErr [numPromptFields]string
}

func (bi *bodyInfo) reset() {
	bi.modelTok = scheduler.Span{}
	bi.hasModel, bi.modelEsc, bi.modelType = false, false, ""
	bi.stream, bi.includeUsage = false, false
	bi.cacheSalt, bi.hasCacheSalt = scheduler.Span{}, false
	for f := range bi.spans {
		bi.spans[f] = bi.spans[f][:0]
		bi.present[f] = false
		bi.fieldErr[f] = ""
	}
}

// promptSpans returns the spans of the field that holds the prompt for a.
func (bi *bodyInfo) promptSpans(a api) []scheduler.Span {
	switch a {
	case apiChat:
		return bi.spans[fMessages]
	case apiCompletions:
		return bi.spans[fPrompt]
	case apiResponses, apiEmbeddings:
		return bi.spans[fInput]
	}
	for f := range bi.spans {
		if bi.present[f] {
			return bi.spans[f]
		}
	}
	return nil
}

// relevant reports whether prompt field f is checked for a.
func relevant(a api, f int) bool {
	switch a {
	case apiChat:
		return f == fMessages
	case apiCompletions:
		return f == fPrompt
	case apiResponses, apiEmbeddings:
		return f == fInput
	}
	return true
}

// bodyError is a request body the picker refuses (HTTP 400).
type bodyError struct {
	msg    string
	syntax bool // the body is not valid JSON (as opposed to a field of the wrong type)
}

func (e *bodyError) Error() string { return e.msg }

// maxDepth matches encoding/json's nesting limit.
const maxDepth = 10000

// scanner validates a JSON document in one pass and records what bodyInfo
// needs. It never decodes into maps and never copies the body.
type scanner struct {
	b     []byte
	i     int
	depth int
	stack []byte // open brackets of the value being skipped
	info  *bodyInfo
	api   api
}

// scanBody scans body for a request to api a, filling info. The error is a
// *bodyError: a syntax error (not JSON) or a field error (not an object,
// model missing or not a string, prompt field of the wrong type).
func (s *scanner) scanBody(body []byte, a api, info *bodyInfo) error {
	s.b, s.i, s.depth, s.stack, s.info, s.api = body, 0, 0, s.stack[:0], info, a
	info.reset()
	err := s.top()
	s.b, s.info = nil, nil
	if err != nil {
		return err
	}
	if !info.hasModel {
		if info.modelType != "" {
			return &bodyError{msg: "request body: expected \"model\" to be a string, found " + info.modelType}
		}
		return &bodyError{msg: "request body: expected a \"model\" field, found none"}
	}
	for f := range info.fieldErr {
		if info.fieldErr[f] != "" {
			return &bodyError{msg: info.fieldErr[f]}
		}
	}
	return nil
}

func (s *scanner) syntaxErr(expected string) error {
	found := "end of body"
	if s.i < len(s.b) {
		c := s.b[s.i]
		if c >= 0x20 && c < 0x7f {
			found = strconv.QuoteRune(rune(c))
		} else {
			found = "byte 0x" + strconv.FormatUint(uint64(c), 16)
		}
	}
	return &bodyError{syntax: true, msg: "request body is not valid JSON: expected " + expected + " at offset " + strconv.Itoa(s.i) + ", found " + found}
}

func (s *scanner) ws() {
	b, i := s.b, s.i
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		break
	}
	s.i = i
}

const (
	lo8 = 0x0101010101010101
	hi8 = 0x8080808080808080
)

// specialMask is non-zero when any of the 8 bytes in x is a quote, a
// backslash or a control character (< 0x20).
func specialMask(x uint64) uint64 {
	q := x ^ (lo8 * '"')
	bs := x ^ (lo8 * '\\')
	return ((x-lo8*0x20) & ^x | (q-lo8) & ^q | (bs-lo8) & ^bs) & hi8
}

func isHex(c byte) bool {
	return c-'0' < 10 || (c|0x20)-'a' < 6
}

// str scans the string starting at s.i (a quote) and returns its content
// range and whether it contains escapes.
func (s *scanner) str() (start, end int, esc bool, err error) {
	b := s.b
	i := s.i + 1
	start = i
	for {
		for i+32 <= len(b) {
			w := b[i : i+32]
			if specialMask(binary.LittleEndian.Uint64(w))|specialMask(binary.LittleEndian.Uint64(w[8:]))|
				specialMask(binary.LittleEndian.Uint64(w[16:]))|specialMask(binary.LittleEndian.Uint64(w[24:])) != 0 {
				break
			}
			i += 32
		}
		for i+8 <= len(b) && specialMask(binary.LittleEndian.Uint64(b[i:])) == 0 {
			i += 8
		}
		if i >= len(b) {
			s.i = i
			return 0, 0, false, s.syntaxErr("the end of a string")
		}
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return start, i, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				s.i = i + 1
				return 0, 0, false, s.syntaxErr("an escape character")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := 2; k < 6; k++ {
					if i+k >= len(b) || !isHex(b[i+k]) {
						s.i = i + k
						return 0, 0, false, s.syntaxErr("a hex digit in a \\u escape")
					}
				}
				i += 6
			default:
				s.i = i + 1
				return 0, 0, false, s.syntaxErr("a valid escape character")
			}
		case c < 0x20:
			s.i = i
			return 0, 0, false, s.syntaxErr("a string character (control characters must be escaped)")
		default:
			i++
		}
	}
}

func isDigit(c byte) bool { return c-'0' < 10 }

// num scans a number at s.i.
func (s *scanner) num() error {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		s.i = i
		return s.syntaxErr("a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return s.syntaxErr("a digit after the decimal point")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return s.syntaxErr("a digit in the exponent")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	s.i = i
	return nil
}

func (s *scanner) lit(word string) error {
	for k := 0; k < len(word); k++ {
		if s.i >= len(s.b) || s.b[s.i] != word[k] {
			return s.syntaxErr("the literal " + word)
		}
		s.i++
	}
	return nil
}

// scalar scans a string, number or literal at s.i.
func (s *scanner) scalar() error {
	if s.i >= len(s.b) {
		return s.syntaxErr("a value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, _, _, err := s.str()
		return err
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || isDigit(c):
		return s.num()
	}
	return s.syntaxErr("a value")
}

// value skips any value at s.i (whitespace before it already skipped).
func (s *scanner) value() error {
	if s.i < len(s.b) && (s.b[s.i] == '{' || s.b[s.i] == '[') {
		return s.nested()
	}
	return s.scalar()
}

// kind names the JSON type of the value at s.i, for error messages.
func (s *scanner) kind() string {
	if s.i >= len(s.b) {
		return "nothing"
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	}
	return "a number"
}

func (s *scanner) push(open byte) error {
	s.depth++
	if s.depth > maxDepth {
		return s.syntaxErr("at most 10000 levels of nesting")
	}
	s.stack = append(s.stack, open)
	s.i++
	return nil
}

func (s *scanner) pop() {
	s.depth--
	s.stack = s.stack[:len(s.stack)-1]
	s.i++
}

// elementStart moves from the start of an element of the innermost open
// container to the start of its value (past the key and colon of an object).
func (s *scanner) elementStart() error {
	if s.stack[len(s.stack)-1] == '{' {
		if err := s.key(); err != nil {
			return err
		}
	}
	if s.i >= len(s.b) {
		return s.syntaxErr("a value")
	}
	return nil
}

// key scans `"key" :` and the whitespace after it.
func (s *scanner) key() error {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return s.syntaxErr("a string key")
	}
	if _, _, _, err := s.str(); err != nil {
		return err
	}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return s.syntaxErr("':' after an object key")
	}
	s.i++
	s.ws()
	return nil
}

// nested skips the object or array at s.i without recursion.
func (s *scanner) nested() error {
	base := len(s.stack)
	for {
		// At an opening bracket.
		open := s.b[s.i]
		if err := s.push(open); err != nil {
			return err
		}
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == open+2 { // '{'+2 == '}', '['+2 == ']'
			s.pop()
		} else {
			if err := s.elementStart(); err != nil {
				return err
			}
			if c := s.b[s.i]; c == '{' || c == '[' {
				continue
			}
			if err := s.scalar(); err != nil {
				return err
			}
		}
		// After a value: close containers or start the next element.
		for {
			if len(s.stack) == base {
				return nil
			}
			s.ws()
			top := s.stack[len(s.stack)-1]
			if s.i >= len(s.b) {
				return s.syntaxErr("',' or '" + string(top+2) + "'")
			}
			c := s.b[s.i]
			if c == top+2 {
				s.pop()
				continue
			}
			if c != ',' {
				return s.syntaxErr("',' or '" + string(top+2) + "'")
			}
			s.i++
			s.ws()
			if err := s.elementStart(); err != nil {
				return err
			}
			if c := s.b[s.i]; c == '{' || c == '[' {
				break
			}
			if err := s.scalar(); err != nil {
				return err
			}
		}
	}
}

// Top-level keys the scanner acts on.
const (
	kOther = iota
	kModel
	kStream
	kStreamOptions
	kCacheSalt
	kMessages
	kPrompt
	kInput
)

func keyID(k []byte) int {
	switch string(k) {
	case "model":
		return kModel
	case "stream":
		return kStream
	case "stream_options":
		return kStreamOptions
	case "cache_salt":
		return kCacheSalt
	case "messages":
		return kMessages
	case "prompt":
		return kPrompt
	case "input":
		return kInput
	}
	return kOther
}

// keyBytes returns the key's decoded bytes (allocating only for escaped keys).
func (s *scanner) keyBytes(start, end int, esc bool) []byte {
	k := s.b[start:end]
	if !esc || len(k) > 6*16 { // an escaped key this long cannot name a field we use
		return k
	}
	var out string
	if json.Unmarshal(s.b[start-1:end+1], &out) != nil {
		return k
	}
	return []byte(out)
}

// objKey scans an object key and the colon after it, returning the decoded key.
func (s *scanner) objKey() ([]byte, error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, s.syntaxErr("a string key")
	}
	ks, ke, esc, err := s.str()
	if err != nil {
		return nil, err
	}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return nil, s.syntaxErr("':' after an object key")
	}
	s.i++
	s.ws()
	if s.i >= len(s.b) {
		return nil, s.syntaxErr("a value")
	}
	return s.keyBytes(ks, ke, esc), nil
}

// next moves past the separator after a member of the container closing with
// closer: it reports done when the container closed.
func (s *scanner) next(closer byte) (done bool, err error) {
	s.ws()
	if s.i < len(s.b) {
		switch s.b[s.i] {
		case ',':
			s.i++
			s.ws()
			if s.i >= len(s.b) {
				return false, s.syntaxErr("a value")
			}
			return false, nil
		case closer:
			s.i++
			s.depth--
			return true, nil
		}
	}
	return false, s.syntaxErr("',' or '" + string(closer) + "'")
}

// open enters the container at s.i; it reports done when it is empty.
func (s *scanner) open() (done bool, err error) {
	closer := s.b[s.i] + 2
	s.depth++
	if s.depth > maxDepth {
		return false, s.syntaxErr("at most 10000 levels of nesting")
	}
	s.i++
	s.ws()
	if s.i >= len(s.b) {
		return false, s.syntaxErr("a value or '" + string(closer) + "'")
	}
	if s.b[s.i] == closer {
		s.i++
		s.depth--
		return true, nil
	}
	return false, nil
}

func (s *scanner) top() error {
	s.ws()
	if s.i >= len(s.b) {
		return &bodyError{syntax: true, msg: "request body: expected a JSON object, found an empty body"}
	}
	if s.b[s.i] != '{' {
		k := s.kind()
		if err := s.value(); err != nil {
			return err
		}
		if s.ws(); s.i < len(s.b) {
			return s.syntaxErr("the end of the body")
		}
		return &bodyError{msg: "request body: expected a JSON object, found " + k}
	}
	info := s.info
	done, err := s.open()
	for !done && err == nil {
		var key []byte
		if key, err = s.objKey(); err != nil {
			return err
		}
		switch keyID(key) {
		case kModel:
			err = s.model()
		case kStream:
			info.stream = false
			switch s.b[s.i] {
			case 't':
				err = s.lit("true")
				info.stream = err == nil
			default:
				err = s.value()
			}
		case kStreamOptions:
			err = s.streamOptions()
		case kCacheSalt:
			info.hasCacheSalt = false
			if s.b[s.i] == '"' {
				var st, en int
				st, en, _, err = s.str()
				info.cacheSalt, info.hasCacheSalt = scheduler.Span{Start: st, End: en}, true
			} else {
				err = s.value()
			}
		case kMessages:
			err = s.promptField(fMessages)
		case kPrompt:
			err = s.promptField(fPrompt)
		case kInput:
			err = s.promptField(fInput)
		default:
			err = s.value()
		}
		if err != nil {
			return err
		}
		done, err = s.next('}')
	}
	if err != nil {
		return err
	}
	if s.ws(); s.i < len(s.b) {
		return s.syntaxErr("the end of the body")
	}
	return nil
}

func (s *scanner) model() error {
	info := s.info
	if s.b[s.i] != '"' {
		info.hasModel, info.modelType = false, s.kind()
		return s.value()
	}
	st := s.i
	_, _, esc, err := s.str()
	info.modelTok = scheduler.Span{Start: st, End: s.i}
	info.hasModel, info.modelEsc, info.modelType = true, esc, ""
	return err
}

func (s *scanner) streamOptions() error {
	s.info.includeUsage = false
	if s.b[s.i] != '{' {
		return s.value()
	}
	done, err := s.open()
	for !done && err == nil {
		var key []byte
		if key, err = s.objKey(); err != nil {
			return err
		}
		if string(key) == "include_usage" {
			s.info.includeUsage = false
			if s.b[s.i] == 't' {
				if err = s.lit("true"); err == nil {
					s.info.includeUsage = true
				}
			} else {
				err = s.value()
			}
		} else {
			err = s.value()
		}
		if err != nil {
			return err
		}
		done, err = s.next('}')
	}
	return err
}

// promptField scans messages, prompt or input. Fields irrelevant to the
// request's API are only validated as JSON.
func (s *scanner) promptField(f int) error {
	info := s.info
	info.spans[f] = info.spans[f][:0]
	info.fieldErr[f] = ""
	info.present[f] = false
	if !relevant(s.api, f) {
		return s.value()
	}
	c := s.b[s.i]
	if c == 'n' { // null: no prompt
		return s.lit("null")
	}
	info.present[f] = true
	switch f {
	case fMessages:
		if c != '[' {
			info.fieldErr[f] = "request body: expected \"messages\" to be an array of message objects, found " + s.kind()
			return s.value()
		}
		return s.messages()
	default: // prompt, input
		switch c {
		case '"':
			st, en, _, err := s.str()
			info.spans[f] = append(info.spans[f], scheduler.Span{Start: st, End: en})
			return err
		case '[':
			return s.promptList(f)
		}
		info.fieldErr[f] = "request body: expected \"" + promptFieldNames[f] + "\" to be a string or an array, found " + s.kind()
		return s.value()
	}
}

// promptList scans an array of prompt items: strings, token ids (consecutive
// ids make one span), token-id arrays (one raw span each) and, for input,
// message-like objects.
func (s *scanner) promptList(f int) error {
	info := s.info
	done, err := s.open()
	run := -1 // index of the span of the current run of token ids
	for !done && err == nil {
		c := s.b[s.i]
		switch {
		case c == '"':
			run = -1
			var st, en int
			st, en, _, err = s.str()
			info.spans[f] = append(info.spans[f], scheduler.Span{Start: st, End: en})
		case c == '-' || isDigit(c):
			st := s.i
			err = s.num()
			if run >= 0 {
				info.spans[f][run].End = s.i
			} else {
				run = len(info.spans[f])
				info.spans[f] = append(info.spans[f], scheduler.Span{Start: st, End: s.i})
			}
		case c == '[':
			run = -1
			st := s.i
			err = s.tokenArray(f)
			info.spans[f] = append(info.spans[f], scheduler.Span{Start: st, End: s.i})
		case c == '{' && f == fInput:
			run = -1
			err = s.message(f)
		default:
			run = -1
			if info.fieldErr[f] == "" {
				info.fieldErr[f] = "request body: expected \"" + promptFieldNames[f] + "\" items to be strings or token ids, found " + s.kind()
			}
			err = s.value()
		}
		if err != nil {
			return err
		}
		done, err = s.next(']')
	}
	return err
}

// tokenArray scans an array that must hold only numbers (token ids).
func (s *scanner) tokenArray(f int) error {
	done, err := s.open()
	for !done && err == nil {
		c := s.b[s.i]
		if c == '-' || isDigit(c) {
			err = s.num()
		} else {
			if s.info.fieldErr[f] == "" {
				s.info.fieldErr[f] = "request body: expected \"" + promptFieldNames[f] + "\" nested arrays to hold token ids, found " + s.kind()
			}
			err = s.value()
		}
		if err != nil {
			return err
		}
		done, err = s.next(']')
	}
	return err
}

func (s *scanner) messages() error {
	done, err := s.open()
	for !done && err == nil {
		if s.b[s.i] == '{' {
			err = s.message(fMessages)
		} else {
			if s.info.fieldErr[fMessages] == "" {
				s.info.fieldErr[fMessages] = "request body: expected \"messages\" items to be objects, found " + s.kind()
			}
			err = s.value()
		}
		if err != nil {
			return err
		}
		done, err = s.next(']')
	}
	return err
}

// message scans one message object, recording its content: a string, or the
// text of its content parts. A duplicated "content" key: the last one wins.
func (s *scanner) message(f int) error {
	info := s.info
	first := len(info.spans[f])
	var bad string // why the (last) content has the wrong type
	done, err := s.open()
	for !done && err == nil {
		var key []byte
		if key, err = s.objKey(); err != nil {
			return err
		}
		if string(key) != "content" {
			err = s.value()
		} else {
			info.spans[f] = info.spans[f][:first]
			bad = ""
			switch s.b[s.i] {
			case '"':
				var st, en int
				st, en, _, err = s.str()
				info.spans[f] = append(info.spans[f], scheduler.Span{Start: st, End: en})
			case '[':
				bad, err = s.parts(f)
			case 'n':
				err = s.lit("null")
			default:
				bad = "request body: expected message \"content\" to be a string, an array of parts or null, found " + s.kind()
				err = s.value()
			}
		}
		if err != nil {
			return err
		}
		done, err = s.next('}')
	}
	if bad != "" && info.fieldErr[f] == "" {
		info.fieldErr[f] = bad
	}
	return err
}

// parts scans an array of content parts, recording each part's "text"
// string; bad says why a part has the wrong type.
func (s *scanner) parts(f int) (bad string, err error) {
	info := s.info
	done, err := s.open()
	for !done && err == nil {
		if s.b[s.i] != '{' {
			if bad == "" {
				bad = "request body: expected content parts to be objects, found " + s.kind()
			}
			err = s.value()
		} else {
			first := len(info.spans[f])
			var pdone bool
			pdone, err = s.open()
			for !pdone && err == nil {
				var key []byte
				if key, err = s.objKey(); err != nil {
					return bad, err
				}
				if string(key) == "text" {
					info.spans[f] = info.spans[f][:first]
					if s.b[s.i] == '"' {
						var st, en int
						st, en, _, err = s.str()
						info.spans[f] = append(info.spans[f], scheduler.Span{Start: st, End: en})
					} else {
						err = s.value()
					}
				} else {
					err = s.value()
				}
				if err != nil {
					return bad, err
				}
				pdone, err = s.next('}')
			}
		}
		if err != nil {
			return bad, err
		}
		done, err = s.next(']')
	}
	return bad, err
}
