package scorers

import (
	"fmt"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what config checks at load time, checked at compile time.
var (
	_ Passive = (*prefixProducer)(nil)
	_ Noter   = (*prefixProducer)(nil)
	_ Binder  = (*prefixProducer)(nil)
)

// PrefixProducerType is GIE's approximate prefix-cache data producer. In GIE
// it owns the prefix index: before scheduling it hashes the prompt and writes
// each endpoint's match for prefix-cache-scorer and
// prefix-cache-affinity-filter to read, and after the pick it records the
// prompt on the chosen endpoint. GIE creates one from the prefix-cache-scorer's
// parameters when the config has a prefix-cache-scorer and no producer; a
// producer in the config replaces that one, and then its parameters define
// the index and the scorer's are ignored.
//
// fastepp keeps the index inside each prefix-cache-scorer (hashing in Score,
// recording in Picked), so this type does nothing per request. What it keeps
// of GIE is the precedence of its parameters: when bound (Bind), every
// prefix-cache-scorer of the configuration takes the producer's index
// parameters (its own fullScoreMatchBlocks stays), with a note when they
// differ from the scorer's own; a prefix-cache-affinity-filter without a
// prefix-cache-scorer to read builds its own index with them. Parameters
// (GIE's, same defaults as prefix-cache-scorer): blockSizeTokens, the
// deprecated blockSize (ignored, as GIE ignores it), maxPrefixBlocksToMatch,
// maxPrefixTokensToMatch, lruCapacityPerServer, autoTune. At most one per
// configuration.
const PrefixProducerType = "approx-prefix-cache-producer"

type prefixProducer struct {
	base
	cfg   PrefixConfig
	notes []string
}

func registerPrefixProducer(r *scheduler.Registry) {
	r.MustRegister(PrefixProducerType, scheduler.Factory{
		Kind:   scheduler.KindRequestControl,
		Proto:  (*prefixProducer)(nil),
		Params: prefixIndexParams(),
		Doc:    "accepted for GIE compatibility: its parameters define the prefix index, which fastepp keeps in the prefix-cache-scorer",
		New: func(name string, p scheduler.Params) (scheduler.Plugin, error) {
			cfg, notes, err := readPrefixConfig(p)
			if err != nil {
				return nil, err
			}
			return &prefixProducer{newBase(PrefixProducerType, name), cfg, notes}, nil
		},
	})
}

// Role implements Passive.
func (*prefixProducer) Role() string { return RoleProducer }

// Notes implements Noter.
func (p *prefixProducer) Notes() []string { return p.notes }

// Bind implements Binder: the configuration's prefix-cache-scorers take this
// producer's index parameters, as GIE's read the index this producer defines.
func (p *prefixProducer) Bind(plugins []scheduler.Plugin, _ []*scheduler.Profile) ([]string, error) {
	var notes []string
	readers := 0
	for _, pl := range plugins {
		switch x := pl.(type) {
		case *prefixProducer:
			if x != p && indexOf(plugins, x) < indexOf(plugins, p) {
				return nil, fmt.Errorf("a second %s (the first is %q): GIE keeps one prefix index per configuration, and fastepp keeps it in the prefix-cache-scorer; expected at most one producer", PrefixProducerType, x.Name())
			}
		case *PrefixScorer:
			readers++
			if !x.cfg.sameIndex(p.cfg) {
				notes = append(notes, fmt.Sprintf("prefix-cache-scorer %q uses this producer's index parameters (%v) instead of its own (%v), as in GIE, where the producer's parameters define the prefix index", x.Name(), p.cfg, x.cfg))
				cfg := p.cfg
				cfg.FullScoreMatchBlocks = x.cfg.FullScoreMatchBlocks
				x.setConfig(cfg)
			}
		case *prefixAffinity:
			readers++
		}
	}
	if readers == 0 {
		notes = append(notes, "no prefix-cache-scorer or prefix-cache-affinity-filter reads the prefix index it defines, so it has no effect")
	}
	return notes, nil
}

// indexOf is the position of p in ps, -1 when absent.
func indexOf(ps []scheduler.Plugin, p scheduler.Plugin) int {
	for i, x := range ps {
		if x == p {
			return i
		}
	}
	return -1
}
