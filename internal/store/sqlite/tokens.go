package sqlite

import (
	"sync"

	"github.com/arxsec/arx/internal/store"
)

// tokenCache keeps tokens read by hash, so that a request's bearer token is
// checked without the database. One process writes this database, so the
// cache is exact: every batch that revokes a token drops it before its
// Update returns, and a read that raced with that drop is not kept (gen).
// Unknown tokens are not kept.
type tokenCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]store.Token
}

// tokenCacheSize bounds the cache; it is emptied when full.
const tokenCacheSize = 1 << 16

func (c *tokenCache) get(hash []byte, read func() (*store.Token, error)) (*store.Token, error) {
	c.mu.Lock()
	if t, ok := c.m[string(hash)]; ok {
		c.mu.Unlock()
		return &t, nil
	}
	gen := c.gen
	c.mu.Unlock()
	t, err := read()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if c.m == nil || len(c.m) >= tokenCacheSize {
			c.m = make(map[string]store.Token)
		}
		c.m[string(hash)] = *t
	}
	c.mu.Unlock()
	return t, nil
}

// invalidate drops every token kept.
func (c *tokenCache) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}
