package model

import "time"

// APIToken is a bearer token of the API. Only a hash of its secret is stored; the
// secret is shown once, when the token is created.
type APIToken struct {
	ID   string `json:"id" bson:"id"`
	Name string `json:"name" bson:"name"`
	// Impersonate lets the token act as the user named in X-User (and manage tokens).
	Impersonate  bool      `json:"impersonate" bson:"impersonate"`
	CreationTime time.Time `json:"creationTime" bson:"creationTime"`
	// Token is the secret, set only in the answer that creates the token.
	Token string `json:"token,omitempty" bson:"-"`
}
