package activities

import (
	"fmt"
	"testing"
	"time"
)

func TestSecretCache(t *testing.T) {
	var c secretCache
	now := time.Unix(1_000_000, 0)
	if _, ok := c.get("r1", now); ok {
		t.Fatal("an empty cache answered")
	}
	c.put("r1", runSecrets{mask: []string{"s3cr3t"}}, now)
	if s, ok := c.get("r1", now.Add(secretCacheTTL-time.Second)); !ok || s.mask[0] != "s3cr3t" {
		t.Fatalf("cached secrets: %v %v", s, ok)
	}
	if _, ok := c.get("r2", now); ok {
		t.Fatal("another record's secrets answered")
	}
	if _, ok := c.get("r1", now.Add(secretCacheTTL+time.Second)); ok {
		t.Fatal("expired secrets answered")
	}
	// The cache stays bounded.
	for i := range 3 * secretCacheMax {
		c.put(fmt.Sprint(i), runSecrets{}, now)
	}
	if n := len(c.entries); n > secretCacheMax {
		t.Fatalf("%d entries kept, at most %d", n, secretCacheMax)
	}
}
