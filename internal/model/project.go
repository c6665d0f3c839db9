// Package model holds the domain types shared by the API, the store, the workflows and
// the activities: projects, pipelines, pipeline records and their stage statuses.
//
// The JSON shape of every type is the Cyclone API v1 wire format. BSON tags give the
// MongoDB document shape. Secret fields travel in plaintext only on the way in (from a
// request body) and on the way to an activity that needs them; the store seals them
// into the Sealed* fields and the API never renders them.
package model

import "time"

// SCM types, in their canonical spelling.
const (
	SCMGithub = "Github"
	SCMGitlab = "Gitlab"
	SCMSVN    = "SVN"
)

// Project groups pipelines and holds what they share: SCM credentials, registry and
// worker placement.
type Project struct {
	ID             string        `json:"id" bson:"_id"`
	Name           string        `json:"name" bson:"name"`
	Alias          string        `json:"alias" bson:"alias"`
	Description    string        `json:"description" bson:"description"`
	Owner          string        `json:"owner" bson:"owner"`
	SCM            *SCMConfig    `json:"scm" bson:"scm"`
	Registry       *Registry     `json:"registry,omitempty" bson:"registry,omitempty"`
	Worker         *WorkerConfig `json:"worker,omitempty" bson:"worker,omitempty"`
	CreationTime   time.Time     `json:"creationTime" bson:"creationTime"`
	LastUpdateTime time.Time     `json:"lastUpdateTime" bson:"lastUpdateTime"`
}

// SCMConfig says where the project's code lives and how to authenticate.
type SCMConfig struct {
	Type     string `json:"type" bson:"type"`
	Server   string `json:"server" bson:"server"`
	Username string `json:"username" bson:"username"`

	// Plaintext secrets: accepted in requests, never stored or returned.
	Password string `json:"password" bson:"-"`
	Token    string `json:"token" bson:"-"`

	// Tell a client whether a secret is stored without revealing it.
	PasswordSet bool `json:"passwordSet" bson:"-"`
	TokenSet    bool `json:"tokenSet" bson:"-"`

	SealedPassword []byte `json:"-" bson:"password,omitempty"`
	SealedToken    []byte `json:"-" bson:"token,omitempty"`
}

// Registry is the image registry the project's images are pushed to.
type Registry struct {
	Server     string `json:"server" bson:"server"`
	Repository string `json:"repository" bson:"repository"`
	Username   string `json:"username" bson:"username"`

	Password    string `json:"password" bson:"-"`
	PasswordSet bool   `json:"passwordSet" bson:"-"`

	SealedPassword []byte `json:"-" bson:"password,omitempty"`
}

// WorkerConfig places the project's records on a cloud and sizes them.
type WorkerConfig struct {
	Location         *WorkerLocation            `json:"location,omitempty" bson:"location,omitempty"`
	Namespace        string                     `json:"namespace,omitempty" bson:"namespace,omitempty"`
	DependencyCaches map[string]DependencyCache `json:"dependencyCaches,omitempty" bson:"dependencyCaches,omitempty"`
	Quota            Quota                      `json:"quota,omitempty" bson:"quota,omitempty"`
}

// Quota sizes each step of the project's records: "requests.cpu", "requests.memory",
// "limits.cpu", "limits.memory" to a quantity such as "500m" or "2G". Its keys hold
// dots, which MongoDB-compatible stores refuse in field names: the store keeps it as
// a list of name/value pairs.
type Quota map[string]string

// WorkerLocation names the cloud (and Kubernetes namespace) records run on.
type WorkerLocation struct {
	CloudName string `json:"cloudName" bson:"cloudName"`
	Namespace string `json:"namespace,omitempty" bson:"namespace,omitempty"`
}

// DependencyCache names a volume kept between records, per build tool.
type DependencyCache struct {
	Name string `json:"name" bson:"name"`
}

// Redact clears plaintext secrets and sets the *Set flags from what is sealed, so
// the project can be rendered to a client.
func (p *Project) Redact() {
	if p.SCM != nil {
		p.SCM.Password, p.SCM.Token = "", ""
		p.SCM.PasswordSet = len(p.SCM.SealedPassword) > 0
		p.SCM.TokenSet = len(p.SCM.SealedToken) > 0
	}
	if p.Registry != nil {
		p.Registry.Password = ""
		p.Registry.PasswordSet = len(p.Registry.SealedPassword) > 0
	}
}
