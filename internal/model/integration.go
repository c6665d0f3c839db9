package model

import (
	"net/url"
	"strings"
	"time"
)

// Integration types, in their canonical spelling.
const (
	IntegrationSonarQube = "SonarQube"
)

// Integration is an external service pipelines use by name: today a SonarQube
// server for the codeScan stage (the spec's IntegrationObject).
type Integration struct {
	ID             string           `json:"-" bson:"_id"`
	Name           string           `json:"name" bson:"name"`
	Alias          string           `json:"alias,omitempty" bson:"alias,omitempty"`
	Type           string           `json:"type" bson:"type"`
	SonarQube      *SonarQubeServer `json:"sonarqube,omitempty" bson:"sonarqube,omitempty"`
	CreationTime   time.Time        `json:"creationTime" bson:"creationTime"`
	LastUpdateTime time.Time        `json:"lastUpdateTime" bson:"lastUpdateTime"`
}

// SonarQubeServer is a SonarQube server and the token Cyclone uses on it.
type SonarQubeServer struct {
	Description string `json:"description,omitempty" bson:"description,omitempty"`
	Address     string `json:"address" bson:"address"`
	// User is only shown: the token alone authenticates.
	User string `json:"user,omitempty" bson:"user,omitempty"`

	// Token is accepted in requests, never stored in plaintext or returned.
	Token string `json:"token,omitempty" bson:"-"`
	// TokenSet tells a client a token is stored without revealing it.
	TokenSet    bool   `json:"tokenSet" bson:"-"`
	SealedToken []byte `json:"-" bson:"token,omitempty"`
}

// Redact clears the plaintext token and sets TokenSet from what is sealed, so the
// integration can be rendered to a client.
func (i *Integration) Redact() {
	if i.SonarQube != nil {
		i.SonarQube.Token = ""
		i.SonarQube.TokenSet = len(i.SonarQube.SealedToken) > 0
	}
}

// NormalizeAndValidate checks an integration as received from a client and
// canonicalises its type. A missing token is not an error here: an update may keep
// the stored one (the caller decides).
func (i *Integration) NormalizeAndValidate() error {
	if err := checkName("name", i.Name); err != nil {
		return err
	}
	if !strings.EqualFold(i.Type, IntegrationSonarQube) {
		return fieldErr("type", "%q is not one of SonarQube", i.Type)
	}
	i.Type = IntegrationSonarQube
	s := i.SonarQube
	if s == nil {
		return fieldErr("sonarqube", "is required for type SonarQube")
	}
	if err := checkDescription("sonarqube.description", s.Description); err != nil {
		return err
	}
	s.Address = strings.TrimRight(strings.TrimSpace(s.Address), "/")
	if s.Address == "" {
		return fieldErr("sonarqube.address", "is required")
	}
	u, err := url.Parse(s.Address)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fieldErr("sonarqube.address", "%q is not an http or https URL", s.Address)
	}
	if u.User != nil {
		// Never echo it back: it may carry a password.
		return fieldErr("sonarqube.address", "must not hold credentials; give the token as sonarqube.token")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fieldErr("sonarqube.address", "%q must not have a query or fragment", s.Address)
	}
	if strings.ContainsAny(s.Token, " \t\r\n") {
		return fieldErr("sonarqube.token", "must not contain white space")
	}
	return nil
}
