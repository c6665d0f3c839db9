package activities

import (
	"sync"
	"time"
)

// secretCacheTTL is how long a record's opened secrets serve its next stages: the
// stages of a record follow one another within it, so one record costs the store
// one read of its project's and pipeline's secrets instead of two per stage.
const secretCacheTTL = 2 * time.Minute

// secretCacheMax bounds the records whose secrets are kept at once.
const secretCacheMax = 1024

// secretCache keeps the secrets opened for a record for its next stages, in this
// worker's memory only.
type secretCache struct {
	mu      sync.Mutex
	entries map[string]secretEntry
}

type secretEntry struct {
	secrets runSecrets
	expires time.Time
}

func (c *secretCache) get(recordID string, now time.Time) (runSecrets, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[recordID]
	if !ok || now.After(e.expires) {
		delete(c.entries, recordID)
		return runSecrets{}, false
	}
	return e.secrets, true
}

func (c *secretCache) put(recordID string, s runSecrets, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = map[string]secretEntry{}
	}
	if len(c.entries) >= secretCacheMax {
		for id, e := range c.entries {
			if now.After(e.expires) {
				delete(c.entries, id)
			}
		}
		if len(c.entries) >= secretCacheMax {
			clear(c.entries)
		}
	}
	c.entries[recordID] = secretEntry{secrets: s, expires: now.Add(secretCacheTTL)}
}
