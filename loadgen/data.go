package loadgen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one generated request, before it is encoded for the API.
type Request struct {
	Index     int64
	Stage     int
	Prompt    string    // completion API (chat messages joined when Messages is set)
	Messages  []Message // chat API; nil for plain prompts
	InputLen  int       // planned prompt tokens (the estimate when usage is absent)
	MaxTokens int
	Group     string // prefix group or conversation id, for the CSV
}

// generator produces requests in sequence; it is called from one goroutine.
type generator interface {
	next(i int64) Request
}

// vocabulary holds words that most BPE tokenizers encode as one token each
// (with the leading space), so n words ≈ n tokens.
var vocabulary = strings.Fields(`the of and to in is was for on are with as by at be this from or an that
have not but all can had one were there we you when your which their said if do will each about how up out
them then she many some so these would other into has more her two like him see time could no make than
first been its who now people my made over did down only way find use may water long little very after
words called just where most know get through back much go good new write our me man too any day same
right look think also around another came come work three word must because does part even place well
such here take why things help put years different away again off went old number great tell men say
small every found still between name should home big give air line set own under read last never us left
end along while might next sound below saw something thought both few those always looked show large
often together asked house world going want school important until form food keep children feet land
side without boy once animals life enough took sometimes four head above kind began almost live page got
earth need far hand high year mother light parts country father let night following picture being study
second eyes soon times story boys since white days paper hard near sentence better best across during
today others however sure means knew its try told young miles sun ways thing whole hear example heard
several change answer room sea against top turned learn point city play toward five using himself usually`)

const corpusWords = 1 << 17

// corpus is a long deterministic random text; prompts are slices of it, so
// making a prompt allocates nothing unless it is longer than the corpus.
type corpus struct {
	text   string
	starts []int32 // byte offset of word i; starts[len] = len(text)
}

func newCorpus(seed uint64) *corpus {
	r := rand.New(rand.NewPCG(seed, 0x636f72707573))
	var b strings.Builder
	starts := make([]int32, 0, corpusWords+1)
	for i := 0; i < corpusWords; i++ {
		starts = append(starts, int32(b.Len()))
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[r.IntN(len(vocabulary))])
	}
	starts = append(starts, int32(b.Len()))
	return &corpus{text: b.String(), starts: starts}
}

// slice returns n words starting at word `from` (taken modulo the corpus).
func (c *corpus) slice(from, n int) string {
	if n <= 0 {
		return ""
	}
	from = ((from % corpusWords) + corpusWords) % corpusWords
	if from+n <= corpusWords {
		s := c.text[c.starts[from]:c.starts[from+n]]
		return strings.TrimPrefix(s, " ")
	}
	var b strings.Builder
	for n > 0 {
		k := min(n, corpusWords-from)
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strings.TrimPrefix(c.text[c.starts[from]:c.starts[from+k]], " "))
		n -= k
		from = 0
	}
	return b.String()
}

func join(sys, user string) string {
	if sys == "" {
		return user
	}
	return sys + "\n" + user
}

// newGenerator builds the generator for cfg.Data. Trace records are returned
// too (trace_replay uses their timestamps).
func newGenerator(cfg *Config) (generator, []TraceRecord, error) {
	seed := uint64(cfg.Load.SeedValue())
	c := newCorpus(seed)
	chat := cfg.API.Type == APIChat
	switch cfg.Data.Type {
	case DataRandom:
		src := rand.NewPCG(seed, 0x72616e646f6d)
		return &randomGen{c: c, r: rand.New(src), in: newDistSampler(cfg.Data.InputDistribution, src),
			out: newDistSampler(cfg.Data.OutputDistribution, src), chat: chat}, nil, nil
	case DataSharedPrefix:
		sp := cfg.Data.SharedPrefix
		s := seed
		if sp.Seed != nil {
			s = uint64(*sp.Seed)
		}
		src := rand.NewPCG(s, 0x707265666978)
		g := &sharedPrefixGen{c: c, r: rand.New(src), chat: chat, groups: sp.NumGroups, perGroup: sp.NumPromptsPerGroup,
			q: newSampler(sp.QuestionLen, src), out: newSampler(sp.OutputLen, src)}
		sys := newSampler(sp.SystemPromptLen, src)
		g.sys = make([]string, sp.NumGroups)
		g.sysLen = make([]int, sp.NumGroups)
		for i := range g.sys {
			n := sys.sample()
			g.sysLen[i] = n
			g.sys[i] = c.slice(g.r.IntN(corpusWords), n)
		}
		return g, nil, nil
	case DataMultiTurn:
		mt := cfg.Data.MultiTurn
		src := rand.NewPCG(seed, 0x6d756c7469)
		g := &multiTurnGen{c: c, r: rand.New(src), chat: chat, turns: newSampler(mt.Turns, src),
			sys: newSampler(mt.SystemPromptLen, src), in: newSampler(mt.InputLen, src), out: newSampler(mt.OutputLen, src)}
		g.convs = make([]conversation, mt.NumConversations)
		for i := range g.convs {
			g.reset(i)
		}
		return g, nil, nil
	case DataTrace:
		recs, err := ReadTrace(cfg.Data.Trace.File)
		if err != nil {
			return nil, nil, err
		}
		return &traceGen{c: c, recs: recs, chat: chat}, recs, nil
	}
	return nil, nil, fmt.Errorf("data.type: expected random, shared_prefix, multi_turn or trace, found %q", cfg.Data.Type)
}

type randomGen struct {
	c       *corpus
	r       *rand.Rand
	in, out sampler
	chat    bool
}

func (g *randomGen) next(i int64) Request {
	n := g.in.sample()
	p := g.c.slice(g.r.IntN(corpusWords), n)
	req := Request{Index: i, Prompt: p, InputLen: n, MaxTokens: max(1, g.out.sample())}
	if g.chat {
		req.Messages = []Message{{Role: "user", Content: p}}
	}
	return req
}

type sharedPrefixGen struct {
	c        *corpus
	r        *rand.Rand
	chat     bool
	groups   int
	perGroup int
	sys      []string
	sysLen   []int
	q, out   sampler
}

func (g *sharedPrefixGen) next(i int64) Request {
	grp := g.r.IntN(g.groups)
	p := g.r.IntN(g.perGroup)
	n := g.q.sample()
	// each (group, prompt) has its own question text: a fixed corpus offset.
	q := g.c.slice(int(mix(uint64(grp), uint64(p))%corpusWords), n)
	req := Request{Index: i, InputLen: g.sysLen[grp] + n, MaxTokens: max(1, g.out.sample()), Group: strconv.Itoa(grp)}
	if g.chat {
		req.Messages = []Message{{Role: "system", Content: g.sys[grp]}, {Role: "user", Content: q}}
	} else {
		req.Prompt = join(g.sys[grp], q)
	}
	return req
}

func mix(a, b uint64) uint64 {
	x := a*0x9e3779b97f4a7c15 ^ (b + 0x632be59bd9b4e019)
	x ^= x >> 31
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 29
	return x
}

type turn struct {
	userFrom, userLen, asstFrom, asstLen int
}

type conversation struct {
	id      int
	turns   int
	sysFrom int
	sysLen  int
	history []turn
}

type multiTurnGen struct {
	c                   *corpus
	r                   *rand.Rand
	chat                bool
	turns, sys, in, out sampler
	convs               []conversation
	nextID              int
}

func (g *multiTurnGen) reset(i int) {
	g.convs[i] = conversation{id: g.nextID, turns: max(1, g.turns.sample()), sysFrom: g.r.IntN(corpusWords), sysLen: g.sys.sample()}
	g.nextID++
}

// next sends turn k of conversation i%N: the system prompt, every earlier
// user turn with a stand-in assistant reply of that turn's output length
// (open loop cannot wait for the real reply), and a new user message.
func (g *multiTurnGen) next(i int64) Request {
	ci := int(i % int64(len(g.convs)))
	cv := &g.convs[ci]
	if len(cv.history) >= cv.turns {
		g.reset(ci)
		cv = &g.convs[ci]
	}
	t := turn{userFrom: g.r.IntN(corpusWords), userLen: g.in.sample(), asstFrom: g.r.IntN(corpusWords), asstLen: max(1, g.out.sample())}
	cv.history = append(cv.history, t)
	req := Request{Index: i, MaxTokens: t.asstLen, Group: "conv-" + strconv.Itoa(cv.id)}
	msgs := make([]Message, 0, 2*len(cv.history)+1)
	n := cv.sysLen
	if cv.sysLen > 0 {
		msgs = append(msgs, Message{Role: "system", Content: g.c.slice(cv.sysFrom, cv.sysLen)})
	}
	for k, h := range cv.history {
		msgs = append(msgs, Message{Role: "user", Content: g.c.slice(h.userFrom, h.userLen)})
		n += h.userLen
		if k < len(cv.history)-1 {
			msgs = append(msgs, Message{Role: "assistant", Content: g.c.slice(h.asstFrom, h.asstLen)})
			n += h.asstLen
		}
	}
	req.InputLen = n
	if g.chat {
		req.Messages = msgs
	} else {
		var b strings.Builder
		for k, m := range msgs {
			if k > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(m.Content)
		}
		req.Prompt = b.String()
	}
	return req
}

// TraceRecord is one line of a JSONL trace.
type TraceRecord struct {
	Timestamp   float64 `json:"timestamp"`
	InputLen    int     `json:"input_len"`
	OutputLen   int     `json:"output_len"`
	PrefixGroup any     `json:"prefix_group,omitempty"`
	// PrefixLen is how many of InputLen tokens are shared by the group;
	// default half of input_len when a prefix_group is given.
	PrefixLen *int `json:"prefix_len,omitempty"`
}

// ReadTrace reads a JSONL trace, checking every line.
func ReadTrace(path string) ([]TraceRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data.trace.file: %w", err)
	}
	defer f.Close()
	var recs []TraceRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	line := 0
	prev := math.Inf(-1)
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		var r TraceRecord
		dec := json.NewDecoder(strings.NewReader(s))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s line %d: expected a JSON object {timestamp, input_len, output_len, prefix_group}, found %q: %v", path, line, trunc(s, 80), err)
		}
		switch {
		case math.IsNaN(r.Timestamp) || r.Timestamp < 0:
			return nil, fmt.Errorf("%s line %d: timestamp: expected seconds >= 0, found %v", path, line, r.Timestamp)
		case r.Timestamp < prev:
			return nil, fmt.Errorf("%s line %d: timestamp: expected non-decreasing times, found %v after %v", path, line, r.Timestamp, prev)
		case r.InputLen < 1 || r.InputLen > maxTokens:
			return nil, fmt.Errorf("%s line %d: input_len: expected a token count in [1, %d], found %d", path, line, maxTokens, r.InputLen)
		case r.OutputLen < 1 || r.OutputLen > maxTokens:
			return nil, fmt.Errorf("%s line %d: output_len: expected a token count in [1, %d], found %d", path, line, maxTokens, r.OutputLen)
		case r.PrefixLen != nil && (*r.PrefixLen < 0 || *r.PrefixLen > r.InputLen):
			return nil, fmt.Errorf("%s line %d: prefix_len: expected a count in [0, input_len=%d], found %d", path, line, r.InputLen, *r.PrefixLen)
		}
		prev = r.Timestamp
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: expected at least one trace record, found none", path)
	}
	return recs, nil
}

func trunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

type traceGen struct {
	c    *corpus
	recs []TraceRecord
	chat bool
}

func (g *traceGen) next(i int64) Request {
	r := g.recs[int(i%int64(len(g.recs)))]
	req := Request{Index: i, InputLen: r.InputLen, MaxTokens: r.OutputLen}
	var sys string
	rest := r.InputLen
	if r.PrefixGroup != nil {
		req.Group = fmt.Sprint(r.PrefixGroup)
		pl := r.InputLen / 2
		if r.PrefixLen != nil {
			pl = *r.PrefixLen
		}
		h := fnv.New64a()
		h.Write([]byte(req.Group))
		sys = g.c.slice(int(h.Sum64()%corpusWords), pl)
		rest -= pl
	}
	user := g.c.slice(int(mix(uint64(i), 7)%corpusWords), rest)
	if g.chat {
		if sys != "" {
			req.Messages = append(req.Messages, Message{Role: "system", Content: sys})
		}
		req.Messages = append(req.Messages, Message{Role: "user", Content: user})
	} else {
		req.Prompt = join(sys, user)
	}
	return req
}
