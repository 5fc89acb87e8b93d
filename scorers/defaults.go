package scorers

import "github.com/fastepp/fastepp/scheduler"

// GIE default profile weights (no config given).
const (
	DefaultQueueWeight  = 2
	DefaultKVWeight     = 2
	DefaultPrefixWeight = 3
)

// DefaultPlan is the GIE default: one profile "default" with queue-scorer ×2,
// kv-cache-utilization-scorer ×2, prefix-cache-scorer ×3 (GIE defaults),
// max-score-picker (1 endpoint), single-profile-handler, no saturation detector.
func DefaultPlan() (*scheduler.Plan, error) {
	prefix, err := NewPrefixScorer("", DefaultPrefixConfig())
	if err != nil {
		return nil, err
	}
	q := &queueScorer{newBase(QueueScorerType, "")}
	kv := &kvScorer{newBase(KVCacheScorerType, "")}
	pk := NewMaxScorePicker(1)
	h := NewSingleProfileHandler()
	prof := &scheduler.Profile{
		Name: "default",
		Scorers: []scheduler.WeightedScorer{
			{Scorer: q, Weight: DefaultQueueWeight},
			{Scorer: kv, Weight: DefaultKVWeight},
			{Scorer: prefix, Weight: DefaultPrefixWeight},
		},
		Picker: pk,
	}
	return scheduler.NewPlan(h, []*scheduler.Profile{prof}, nil, []scheduler.Plugin{q, kv, prefix, pk, h})
}
