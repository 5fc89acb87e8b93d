package endpoints

import (
	"bytes"
	"math"
	"strconv"
	"strings"

	"github.com/fastepp/fastepp/scheduler"
)

// label is one label pair of a sample; slices point into parser scratch space.
type label struct{ name, value []byte }

func findLabel(ls []label, name string) ([]byte, bool) {
	for i := len(ls) - 1; i >= 0; i-- {
		if string(ls[i].name) == name {
			return ls[i].value, true
		}
	}
	return nil, false
}

// modelLabel is the label whose values name the models a server reports
// (vLLM, SGLang and TensorRT-LLM all use it on their core metrics).
const modelLabel = "model_name"

// maxModels bounds the distinct model names kept per page; a server serves
// one model, a few with LoRA adapters named as models.
const maxModels = 64

// accumulator combines the samples of one page into scheduler.Metrics. It is
// reused across scrapes of one endpoint (reset before each page).
type accumulator struct {
	e    *engine
	seen [famCount]bool
	sum  [famCount]float64 // waiting, running: sums; kv, block size, block count: max

	loraTS                    float64
	loraRunning, loraWaiting  []byte // copies, reused
	loraMax                   []byte
	blockSize, numBlocks      int
	prevRunStr, prevWaitStr   string
	prevRunList, prevWaitList []string

	// Distinct model_name values of this page's core samples, concatenated
	// in models with their ends in modelEnds; prevModels is the slice last
	// handed out, reused while the set is unchanged.
	models     []byte
	modelEnds  []int
	prevModels []string
}

func (a *accumulator) reset(e *engine) {
	a.e = e
	a.seen = [famCount]bool{}
	a.sum = [famCount]float64{}
	a.loraTS = math.Inf(-1)
	a.loraRunning = a.loraRunning[:0]
	a.loraWaiting = a.loraWaiting[:0]
	a.loraMax = a.loraMax[:0]
	a.blockSize, a.numBlocks = 0, 0
	a.models = a.models[:0]
	a.modelEnds = a.modelEnds[:0]
}

// add records one sample of family f with a plain (gauge, counter or
// untyped) value.
func (a *accumulator) add(f family, v float64, ls []label) {
	if math.IsNaN(v) {
		return // an engine that has not computed a value yet: ignore the series
	}
	switch f {
	case famWaiting, famRunning:
		a.sum[f] += v
		a.seen[f] = true
		a.noteModel(ls)
	case famKV, famKVOld, famBlockSize, famNumBlocks:
		if !a.seen[f] || v > a.sum[f] {
			a.sum[f] = v
		}
		a.seen[f] = true
		if f == famKV || f == famKVOld {
			a.noteModel(ls)
		}
	case famLoRA:
		if a.seen[f] && !(v > a.loraTS) {
			return
		}
		a.seen[f] = true
		a.loraTS = v
		r, _ := findLabel(ls, "running_lora_adapters")
		w, _ := findLabel(ls, "waiting_lora_adapters")
		m, _ := findLabel(ls, "max_lora")
		a.loraRunning = append(a.loraRunning[:0], r...)
		a.loraWaiting = append(a.loraWaiting[:0], w...)
		a.loraMax = append(a.loraMax[:0], m...)
	case famCache:
		a.seen[f] = true
		if b, ok := findLabel(ls, a.e.blockSizeLabel); ok {
			if n, ok := atoi(b); ok && n > a.blockSize {
				a.blockSize = n
			}
		}
		if b, ok := findLabel(ls, a.e.numBlocksLabel); ok {
			if n, ok := atoi(b); ok && n > a.numBlocks {
				a.numBlocks = n
			}
		}
	}
}

// noteModel records the sample's model_name among the page's models.
func (a *accumulator) noteModel(ls []label) {
	v, ok := findLabel(ls, modelLabel)
	if !ok || len(v) == 0 || len(a.modelEnds) >= maxModels {
		return
	}
	start := 0
	for _, end := range a.modelEnds {
		if string(a.models[start:end]) == string(v) {
			return
		}
		start = end
	}
	a.models = append(a.models, v...)
	a.modelEnds = append(a.modelEnds, len(a.models))
}

// modelList returns the page's model names: the previous slice when the set
// is unchanged (no allocation), else a new one in page order.
func (a *accumulator) modelList() []string {
	n := len(a.modelEnds)
	if n == 0 {
		a.prevModels = nil
		return nil
	}
	same := n == len(a.prevModels)
	for i, start := 0, 0; same && i < n; i++ {
		cur := a.models[start:a.modelEnds[i]]
		start = a.modelEnds[i]
		found := false
		for _, p := range a.prevModels {
			if p == string(cur) {
				found = true
				break
			}
		}
		same = found
	}
	if same {
		return a.prevModels
	}
	list := make([]string, n)
	for i, start := 0, 0; i < n; i++ {
		list[i] = string(a.models[start:a.modelEnds[i]])
		start = a.modelEnds[i]
	}
	a.prevModels = list
	return list
}

// atoi parses a non-negative decimal integer (also "16.0" as vLLM may
// print). Plain digits and an empty value cost no allocation.
func atoi(b []byte) (int, bool) {
	s := bytes.TrimSpace(b)
	if len(s) == 0 {
		return 0, false
	}
	n, digits := 0, true
	for _, c := range s {
		if c < '0' || c > '9' || n > (math.MaxInt32-9)/10 {
			digits = false
			break
		}
		n = n*10 + int(c-'0')
	}
	if digits {
		return n, true
	}
	if f, err := strconv.ParseFloat(bstr(s), 64); err == nil && f >= 0 && f < math.MaxInt32 && f == math.Trunc(f) {
		return int(f), true
	}
	return 0, false
}

// missing reports the core families (waiting, running, KV usage) the page
// lacked, as the engine's specs.
func (a *accumulator) missing() []string {
	var out []string
	for _, f := range coreFamilies {
		if a.seen[f] || (f == famKV && a.seen[famKVOld]) || a.e.specs[f].name == "" {
			continue
		}
		out = append(out, a.e.specs[f].text)
	}
	return out
}

// foundCore reports whether the page had at least one core family.
func (a *accumulator) foundCore() bool {
	return a.seen[famWaiting] || a.seen[famRunning] || a.seen[famKV] || a.seen[famKVOld]
}

// fill writes the combined values into m (UpdatedAt and InflightAtScrape are
// left to the caller). Adapter and model lists are reused from the previous
// page when unchanged, so a steady server costs no allocation here.
func (a *accumulator) fill(m *scheduler.Metrics) {
	m.Waiting = toCount(a.sum[famWaiting])
	m.Running = toCount(a.sum[famRunning])
	kv := a.sum[famKV]
	if !a.seen[famKV] {
		kv = a.sum[famKVOld]
	}
	m.KVUsage = clampUsage(kv)
	m.Models = a.modelList()
	m.ActiveAdapters, m.WaitingAdapters, m.MaxLoRA = nil, nil, 0
	if a.seen[famLoRA] {
		if string(a.loraRunning) != a.prevRunStr {
			a.prevRunStr = string(a.loraRunning)
			a.prevRunList = splitList(a.prevRunStr)
		}
		if string(a.loraWaiting) != a.prevWaitStr {
			a.prevWaitStr = string(a.loraWaiting)
			a.prevWaitList = splitList(a.prevWaitStr)
		}
		m.ActiveAdapters, m.WaitingAdapters = a.prevRunList, a.prevWaitList
		if n, ok := atoi(a.loraMax); ok {
			m.MaxLoRA = n
		}
	}
	m.BlockSize, m.NumGPUBlocks = a.blockSize, a.numBlocks
	if a.seen[famBlockSize] {
		m.BlockSize = max(m.BlockSize, toCount(a.sum[famBlockSize]))
	}
	if a.seen[famNumBlocks] {
		m.NumGPUBlocks = max(m.NumGPUBlocks, toCount(a.sum[famNumBlocks]))
	}
}

// splitList splits a comma-separated adapter list, dropping blanks.
func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func toCount(v float64) int {
	switch {
	case !(v > 0): // also NaN
		return 0
	case v >= math.MaxInt32:
		return math.MaxInt32
	}
	return int(v + 0.5)
}

func clampUsage(v float64) float64 {
	switch {
	case !(v > 0):
		return 0
	case v > 1:
		return 1
	}
	return v
}
