package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
)

func webhookSecretAD(pipelineID string) string { return "pipelines/" + pipelineID + "/webhookSecret" }

// sealWebhookSecret seals a new webhook secret; none given keeps the one p carries
// sealed already (a rollback) or old's.
func (s *Store) sealWebhookSecret(p, old *model.Pipeline) error {
	if p.WebhookSecret == "" {
		if len(p.SealedWebhookSecret) == 0 && old != nil {
			p.SealedWebhookSecret = old.SealedWebhookSecret
		}
		return nil
	}
	sealed, err := s.box.Seal(p.WebhookSecret, webhookSecretAD(p.ID))
	if err != nil {
		return err
	}
	p.SealedWebhookSecret, p.WebhookSecret = sealed, ""
	return nil
}

// PipelineWebhookSecret opens a pipeline's webhook secret ("" when it has none).
func (s *Store) PipelineWebhookSecret(ctx context.Context, pipelineID string) (string, error) {
	p, err := s.GetPipelineByID(ctx, pipelineID)
	if err != nil {
		return "", err
	}
	return s.open(p.SealedWebhookSecret, webhookSecretAD(p.ID))
}

// SetPipelineWebhook records (nil: clears) the webhook registered for a pipeline,
// leaving the rest of it as it is.
func (s *Store) SetPipelineWebhook(ctx context.Context, pipelineID string, h *model.PipelineWebhook) error {
	update := bson.D{{Key: "$set", Value: bson.D{{Key: "webhook", Value: h}}}}
	if h == nil {
		update = bson.D{{Key: "$unset", Value: bson.D{{Key: "webhook", Value: ""}}}}
	}
	var p model.Pipeline
	err := s.pipelines.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: pipelineID}}, update,
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&p)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	// The pipeline list reads pipelines from their cards: keep the card's copy in step.
	return s.cardPipeline(ctx, &p)
}

// PipelinesBySVNRepo lists the pipelines whose main code source is the Subversion
// repository with the given UUID.
func (s *Store) PipelinesBySVNRepo(ctx context.Context, repoID string) ([]*model.Pipeline, error) {
	items, _, err := list[model.Pipeline](ctx, s.pipelines, bson.D{{Key: "svnRepoID", Value: bson.D{{Key: "$eq", Value: repoID}}}},
		bson.D{{Key: "_id", Value: 1}}, ListOptions{})
	return items, err
}

// WebhookKey is the server's key for tokens in Subversion hook URLs: random, made on
// first use, kept sealed in the meta collection so every API server shares it.
func (s *Store) WebhookKey(ctx context.Context) ([]byte, error) {
	const id, ad = "webhook-key", "meta/webhook-key"
	meta := s.db.Collection("meta")
	var doc struct {
		Sealed []byte `bson:"sealed"`
	}
	err := meta.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		sealed, err := s.box.Seal(string(key), ad)
		if err != nil {
			return nil, err
		}
		_, err = meta.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "sealed", Value: sealed}})
		if mongo.IsDuplicateKeyError(err) {
			return s.WebhookKey(ctx) // another server made it first
		}
		if err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the webhook key: %w", err)
	}
	key, err := s.box.Open(doc.Sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("open the webhook key: %w", err)
	}
	return []byte(key), nil
}
