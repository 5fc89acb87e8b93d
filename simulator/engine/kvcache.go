package engine

import (
	"encoding/binary"

	"github.com/cespare/xxhash/v2"
)

// kvCache is the paged KV cache with prefix caching, modelled on vLLM V1's
// block pool: fixed-size blocks, a reference count per block, a hash for every
// full block (chained over the block's tokens and its parent's hash), and a
// free queue that doubles as the LRU of cached blocks: freed blocks go to the
// tail, allocation takes from the head, and taking a cached block evicts its
// hash. A request's cache hit is the longest run of its leading block hashes
// still present.
type kvCache struct {
	blockSize int
	caching   bool
	blocks    []kvBlock
	head      int32 // free queue, -1 when empty
	tail      int32
	numFree   int
	cached    map[uint64]int32
}

type kvBlock struct {
	ref        int32
	prev, next int32 // free-queue links, -1 at the ends
	hash       uint64
	hashed     bool
	inFree     bool
}

func newKVCache(numBlocks, blockSize int, caching bool) *kvCache {
	c := &kvCache{blockSize: blockSize, caching: caching, blocks: make([]kvBlock, numBlocks), cached: map[uint64]int32{}}
	c.head, c.tail = -1, -1
	for i := range c.blocks {
		c.blocks[i].prev, c.blocks[i].next = -1, -1
		c.pushTail(int32(i))
	}
	return c
}

func (c *kvCache) pushTail(id int32) {
	b := &c.blocks[id]
	b.prev, b.next, b.inFree = c.tail, -1, true
	if c.tail >= 0 {
		c.blocks[c.tail].next = id
	} else {
		c.head = id
	}
	c.tail = id
	c.numFree++
}

func (c *kvCache) unlink(id int32) {
	b := &c.blocks[id]
	if b.prev >= 0 {
		c.blocks[b.prev].next = b.next
	} else {
		c.head = b.next
	}
	if b.next >= 0 {
		c.blocks[b.next].prev = b.prev
	} else {
		c.tail = b.prev
	}
	b.prev, b.next, b.inFree = -1, -1, false
	c.numFree--
}

// used is the number of blocks held by requests (vLLM's usage numerator:
// cached but unreferenced blocks count as free).
func (c *kvCache) used() int { return len(c.blocks) - c.numFree }

// lookup returns how many of the leading hashes (at most limit) are cached,
// and how many of those sit in the free queue (would be taken out of it).
func (c *kvCache) lookup(hashes []uint64, limit int) (hits, fromFree int) {
	if !c.caching {
		return 0, 0
	}
	for hits < len(hashes) && hits < limit {
		id, ok := c.cached[hashes[hits]]
		if !ok {
			break
		}
		if c.blocks[id].ref == 0 {
			fromFree++
		}
		hits++
	}
	return hits, fromFree
}

// take appends the cached blocks of the first n hashes to table, taking a
// reference on each; lookup must have reported at least n hits.
func (c *kvCache) take(table []int32, hashes []uint64) []int32 {
	for _, h := range hashes {
		id := c.cached[h]
		b := &c.blocks[id]
		if b.ref == 0 {
			c.unlink(id)
		}
		b.ref++
		table = append(table, id)
	}
	return table
}

// allocate appends n fresh blocks to table, evicting the hashes of cached
// blocks it reuses; it reports false (and changes nothing) if fewer than n are free.
func (c *kvCache) allocate(table []int32, n int) ([]int32, bool) {
	if n > c.numFree {
		return table, false
	}
	for range n {
		id := c.head
		c.unlink(id)
		b := &c.blocks[id]
		if b.hashed {
			if cur, ok := c.cached[b.hash]; ok && cur == id {
				delete(c.cached, b.hash)
			}
			b.hashed = false
		}
		b.ref = 1
		table = append(table, id)
	}
	return table, true
}

// free drops one reference on each block of table, last block first, so a
// sequence's tail is evicted before its head.
func (c *kvCache) free(table []int32) {
	for i := len(table) - 1; i >= 0; i-- {
		id := table[i]
		b := &c.blocks[id]
		b.ref--
		if b.ref == 0 {
			c.pushTail(id)
		}
	}
}

// register records a full block's hash so later requests can reuse it.
func (c *kvCache) register(id int32, h uint64) {
	if !c.caching {
		return
	}
	b := &c.blocks[id]
	if b.hashed {
		return
	}
	b.hash, b.hashed = h, true
	if _, ok := c.cached[h]; !ok {
		c.cached[h] = id
	}
}

// blockHash chains the hash of one full block of tokens onto its parent's.
func blockHash(parent uint64, tokens []uint32) uint64 {
	var buf [8 + 4*64]byte
	var d xxhash.Digest
	d.Reset()
	binary.LittleEndian.PutUint64(buf[:8], parent)
	_, _ = d.Write(buf[:8])
	for len(tokens) > 0 {
		k := min(len(tokens), 64)
		for j := 0; j < k; j++ {
			binary.LittleEndian.PutUint32(buf[4*j:], tokens[j])
		}
		_, _ = d.Write(buf[:4*k])
		tokens = tokens[k:]
	}
	return d.Sum64()
}
