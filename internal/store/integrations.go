package store

import (
	"context"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/cycloneci/cyclone/internal/model"
)

func (s *Store) integrations() *mongo.Collection { return s.db.Collection("integrations") }

// integrationAD binds a sealed integration token to the integration and field.
func integrationAD(id string) string { return "integrations/" + id + "/sonarqube.token" }

// sealIntegration seals the plaintext token of in. An empty token keeps what old
// had sealed for the same address: a kept token stays with the server it was given
// for.
func (s *Store) sealIntegration(in, old *model.Integration) error {
	if in.SonarQube == nil {
		return nil
	}
	var keep []byte
	if old != nil && old.SonarQube != nil && old.SonarQube.Address == in.SonarQube.Address {
		keep = old.SonarQube.SealedToken
	}
	var err error
	in.SonarQube.SealedToken, err = s.seal(in.SonarQube.Token, integrationAD(in.ID), keep)
	return err
}

// CreateIntegration inserts in, assigning its ID and times. A taken name is
// ErrConflict.
func (s *Store) CreateIntegration(ctx context.Context, in *model.Integration) error {
	in.ID = uuid.NewString()
	in.CreationTime = now()
	in.LastUpdateTime = in.CreationTime
	if err := s.sealIntegration(in, nil); err != nil {
		return err
	}
	_, err := s.integrations().InsertOne(ctx, in)
	return writeErr(err)
}

// GetIntegration returns the integration with the given name.
func (s *Store) GetIntegration(ctx context.Context, name string) (*model.Integration, error) {
	return findOne[model.Integration](ctx, s.integrations(), bson.D{{Key: "name", Value: name}})
}

// ListIntegrations lists the integrations by name.
func (s *Store) ListIntegrations(ctx context.Context, o ListOptions) ([]*model.Integration, int64, error) {
	filter, err := buildFilter(bson.D{}, o.Filter, map[string]string{"name": "name", "type": "type", "alias": "alias"})
	if err != nil {
		return nil, 0, err
	}
	return list[model.Integration](ctx, s.integrations(), filter, bson.D{{Key: "name", Value: 1}}, o)
}

// UpdateIntegration replaces the integration called name with in, keeping its ID,
// name, creation time and (for the same address) a token in leaves empty.
func (s *Store) UpdateIntegration(ctx context.Context, name string, in *model.Integration) error {
	old, err := s.GetIntegration(ctx, name)
	if err != nil {
		return err
	}
	in.ID, in.Name = old.ID, old.Name
	in.CreationTime = old.CreationTime
	in.LastUpdateTime = now()
	if err := s.sealIntegration(in, old); err != nil {
		return err
	}
	res, err := s.integrations().ReplaceOne(ctx, bson.D{{Key: "_id", Value: old.ID}}, in)
	if err != nil {
		return writeErr(err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteIntegration deletes the integration called name.
func (s *Store) DeleteIntegration(ctx context.Context, name string) error {
	res, err := s.integrations().DeleteOne(ctx, bson.D{{Key: "name", Value: name}})
	if err != nil {
		return err
	}
	if res.DeletedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// IntegrationSecret is an integration's server and opened token, for the worker.
type IntegrationSecret struct {
	Type    string
	Address string
	Token   string
}

// IntegrationSecret opens the token of the integration called name.
func (s *Store) IntegrationSecret(ctx context.Context, name string) (*IntegrationSecret, error) {
	in, err := s.GetIntegration(ctx, name)
	if err != nil {
		return nil, err
	}
	sec := &IntegrationSecret{Type: in.Type}
	if in.SonarQube != nil {
		sec.Address = in.SonarQube.Address
		if sec.Token, err = s.open(in.SonarQube.SealedToken, integrationAD(in.ID)); err != nil {
			return nil, err
		}
	}
	return sec, nil
}

// IntegrationUsers returns up to limit pipelines whose codeScan uses the
// integration called name, and how many there are in all.
func (s *Store) IntegrationUsers(ctx context.Context, name string, limit int64) ([]*model.Pipeline, int64, error) {
	filter := bson.D{{Key: "build.stages.codeScan.sonarqube.name", Value: name}}
	return list[model.Pipeline](ctx, s.pipelines, filter, bson.D{{Key: "name", Value: 1}}, ListOptions{Limit: limit})
}
