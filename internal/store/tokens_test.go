package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

// TestTokensStoredHashed reads the tokens collection as it is on disk: a token's
// document holds the SHA-256 of its secret and never the secret, even when the
// caller leaves the secret on the token it stores; the secret opens the token, its
// hash does not, and a revoked token opens nothing.
func TestTokensStoredHashed(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	const secret = "cyc_Zm9yLXRoZS10b2tlbnMtdGVzdC1vbmx5LW5vdC1hLXJlYWwtb25l"
	tok := &model.APIToken{Name: "ci-bot", Token: secret}
	if err := st.CreateToken(ctx, tok, secret); err != nil {
		t.Fatal(err)
	}

	c, err := mongo.Connect(ctx, options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	cur, err := c.Database("cyclone").Collection("tokens").Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []bson.M
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 {
		t.Fatalf("%d token documents, want 1: %v", len(docs), docs)
	}
	raw := bsonString(t, docs[0])
	for _, part := range []string{secret, strings.TrimPrefix(secret, "cyc_")} {
		if strings.Contains(raw, part) {
			t.Fatalf("the secret is stored in plaintext: %s", raw)
		}
	}
	sum := sha256.Sum256([]byte(secret))
	if docs[0]["_id"] != hex.EncodeToString(sum[:]) || docs[0]["id"] != tok.ID || docs[0]["name"] != "ci-bot" {
		t.Fatalf("token document %s, want _id the SHA-256 of the secret, id %s and name ci-bot", raw, tok.ID)
	}

	got, err := st.LookupToken(ctx, secret)
	if err != nil || got.ID != tok.ID || got.Token != "" {
		t.Fatalf("lookup by secret: %+v, %v", got, err)
	}
	if _, err := st.LookupToken(ctx, hex.EncodeToString(sum[:])); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lookup by the stored hash: %v, want ErrNotFound", err)
	}
	list, err := st.ListTokens(ctx)
	if err != nil || len(list) != 1 || list[0].Token != "" {
		t.Fatalf("list %+v, %v: want the one token without its secret", list, err)
	}

	if err := st.DeleteToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LookupToken(ctx, secret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("lookup of a revoked token: %v, want ErrNotFound", err)
	}
	if err := st.DeleteToken(ctx, tok.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoking twice: %v, want ErrNotFound", err)
	}
}
