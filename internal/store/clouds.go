package store

import (
	"context"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"

	"github.com/cycloneci/cyclone/internal/model"
)

func (s *Store) clouds() *mongo.Collection { return s.db.Collection("clouds") }

// sealCloud seals the plaintext secrets of c. An empty plaintext keeps what old had
// sealed for the same host: clients never see secrets, so an update that omits one
// means "unchanged", but a cloud pointed at another cluster must be given them again.
func (s *Store) sealCloud(c, old *model.Cloud) error {
	k := c.Kubernetes
	if k == nil {
		return nil
	}
	ad := "clouds/" + c.ID + "/"
	var oldTok, oldPass, oldCA []byte
	if old != nil && old.Kubernetes != nil && old.Kubernetes.Host == k.Host {
		oldTok, oldPass = old.Kubernetes.SealedBearerToken, old.Kubernetes.SealedPassword
		if old.Kubernetes.TLSClientConfig != nil {
			oldCA = old.Kubernetes.TLSClientConfig.SealedCAData
		}
	}
	// A new way of authenticating replaces the old one rather than adding to it.
	switch {
	case k.BearerToken != "":
		oldPass = nil
	case k.Password != "":
		oldTok = nil
	}
	var err error
	if k.SealedBearerToken, err = s.seal(k.BearerToken, ad+"kubernetes.bearerToken", oldTok); err != nil {
		return err
	}
	if k.SealedPassword, err = s.seal(k.Password, ad+"kubernetes.password", oldPass); err != nil {
		return err
	}
	if oldCA != nil && k.TLSClientConfig == nil {
		k.TLSClientConfig = &model.TLSClientConfig{}
	}
	if t := k.TLSClientConfig; t != nil {
		if t.SealedCAData, err = s.seal(t.CAData, ad+"kubernetes.tlsClientConfig.caData", oldCA); err != nil {
			return err
		}
	}
	return nil
}

// CreateCloud inserts c, assigning its ID and times. A taken name is ErrConflict.
func (s *Store) CreateCloud(ctx context.Context, c *model.Cloud) error {
	c.ID = uuid.NewString()
	c.CreationTime = now()
	c.LastUpdateTime = c.CreationTime
	if err := s.sealCloud(c, nil); err != nil {
		return err
	}
	_, err := s.clouds().InsertOne(ctx, c)
	return writeErr(err)
}

// GetCloud returns the cloud with the given name.
func (s *Store) GetCloud(ctx context.Context, name string) (*model.Cloud, error) {
	return findOne[model.Cloud](ctx, s.clouds(), bson.D{{Key: "name", Value: name}})
}

// ListClouds lists clouds by name.
func (s *Store) ListClouds(ctx context.Context, o ListOptions) ([]*model.Cloud, int64, error) {
	filter, err := buildFilter(bson.D{}, o.Filter, map[string]string{"name": "name", "type": "type"})
	if err != nil {
		return nil, 0, err
	}
	return list[model.Cloud](ctx, s.clouds(), filter, bson.D{{Key: "name", Value: 1}}, o)
}

// UpdateCloud replaces the cloud called name with c, keeping its ID, creation time
// and any secret c leaves empty. c may rename the cloud.
func (s *Store) UpdateCloud(ctx context.Context, name string, c *model.Cloud) error {
	old, err := s.GetCloud(ctx, name)
	if err != nil {
		return err
	}
	c.ID = old.ID
	c.CreationTime = old.CreationTime
	c.LastUpdateTime = now()
	if err := s.sealCloud(c, old); err != nil {
		return err
	}
	res, err := s.clouds().ReplaceOne(ctx, bson.D{{Key: "_id", Value: old.ID}}, c)
	if err != nil {
		return writeErr(err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteCloud deletes the cloud called name.
func (s *Store) DeleteCloud(ctx context.Context, name string) error {
	res, err := s.clouds().DeleteOne(ctx, bson.D{{Key: "name", Value: name}})
	if err != nil {
		return err
	}
	if res.DeletedCount == 0 {
		return ErrNotFound
	}
	return nil
}

// CloudSecrets opens a cloud's sealed secrets.
func (s *Store) CloudSecrets(c *model.Cloud) (*model.CloudSecrets, error) {
	out := &model.CloudSecrets{}
	k := c.Kubernetes
	if k == nil {
		return out, nil
	}
	ad := "clouds/" + c.ID + "/"
	var err error
	if out.BearerToken, err = s.open(k.SealedBearerToken, ad+"kubernetes.bearerToken"); err != nil {
		return nil, err
	}
	if out.Password, err = s.open(k.SealedPassword, ad+"kubernetes.password"); err != nil {
		return nil, err
	}
	if t := k.TLSClientConfig; t != nil {
		ca, err := s.open(t.SealedCAData, ad+"kubernetes.tlsClientConfig.caData")
		if err != nil {
			return nil, err
		}
		if ca != "" {
			if out.CAData, err = model.DecodeCAData(ca); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
