package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/cycloneci/cyclone/internal/model"
)

// tokenDoc is an API token as stored: keyed by the SHA-256 of its secret, so a
// lookup is one _id read and the secret is never stored. Tokens are long random
// strings, so a plain hash (no salt, no slow KDF) is enough.
type tokenDoc struct {
	Hash           string `bson:"_id"`
	model.APIToken `bson:",inline"`
}

// TokenHash is how a token's secret is stored.
func TokenHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

func (s *Store) tokens() *mongo.Collection { return s.db.Collection("tokens") }

// CreateToken stores a token for the given secret, assigning its ID and time.
func (s *Store) CreateToken(ctx context.Context, t *model.APIToken, secret string) error {
	t.ID, t.CreationTime = uuid.NewString(), now()
	_, err := s.tokens().InsertOne(ctx, tokenDoc{Hash: TokenHash(secret), APIToken: *t})
	return writeErr(err)
}

// LookupToken returns the token whose secret this is, or ErrNotFound.
func (s *Store) LookupToken(ctx context.Context, secret string) (*model.APIToken, error) {
	d, err := findOne[tokenDoc](ctx, s.tokens(), bson.D{{Key: "_id", Value: TokenHash(secret)}})
	if err != nil {
		return nil, err
	}
	return &d.APIToken, nil
}

// ListTokens lists the tokens (never their secrets).
func (s *Store) ListTokens(ctx context.Context) ([]*model.APIToken, error) {
	docs, _, err := list[tokenDoc](ctx, s.tokens(), bson.D{}, bson.D{{Key: "creationTime", Value: 1}}, ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*model.APIToken, 0, len(docs))
	for _, d := range docs {
		out = append(out, &d.APIToken)
	}
	return out, nil
}

// DeleteToken revokes a token by its ID.
func (s *Store) DeleteToken(ctx context.Context, id string) error {
	res, err := s.tokens().DeleteMany(ctx, bson.D{{Key: "id", Value: id}})
	if err != nil {
		return err
	}
	if res.DeletedCount == 0 {
		return ErrNotFound
	}
	return nil
}
