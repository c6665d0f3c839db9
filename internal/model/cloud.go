package model

import (
	"encoding/base64"
	"net/url"
	"strings"
	"time"
)

// Cloud types, in their canonical spelling. Docker and Kubernetes are the spec's;
// Local (host processes of the worker) is what `cyclone dev` falls back to when no
// Docker engine answers.
const (
	CloudDocker     = "Docker"
	CloudKubernetes = "Kubernetes"
	CloudLocal      = "Local"
)

// DefaultCloudName is the cloud records run on when their project names none.
const DefaultCloudName = "default"

// Cloud is where records run: a Docker engine or a Kubernetes cluster (the spec's
// CloudObject).
type Cloud struct {
	ID         string           `json:"id" bson:"_id"`
	Type       string           `json:"type" bson:"type"`
	Name       string           `json:"name" bson:"name"`
	Docker     *DockerCloud     `json:"docker,omitempty" bson:"docker,omitempty"`
	Kubernetes *KubernetesCloud `json:"kubernetes,omitempty" bson:"kubernetes,omitempty"`
	// MaxRunningRecords bounds the records running on the cloud at once; records
	// beyond it wait in order, Pending. 0 means the worker's default
	// (--max-running-records), itself 0 for unlimited.
	MaxRunningRecords int       `json:"maxRunningRecords,omitempty" bson:"maxRunningRecords,omitempty"`
	CreationTime      time.Time `json:"creationTime" bson:"creationTime"`
	LastUpdateTime    time.Time `json:"lastUpdateTime" bson:"lastUpdateTime"`
}

// DockerCloud is a Docker engine.
type DockerCloud struct {
	Host     string `json:"host" bson:"host"`
	CertPath string `json:"certPath,omitempty" bson:"certPath,omitempty"`
	Insecure bool   `json:"insecure,omitempty" bson:"insecure,omitempty"`
}

// KubernetesCloud is a Kubernetes cluster and the namespace records run in.
type KubernetesCloud struct {
	Host      string `json:"host" bson:"host"`
	Namespace string `json:"namespace" bson:"namespace"`
	Username  string `json:"username,omitempty" bson:"username,omitempty"`
	InCluster bool   `json:"inCluster,omitempty" bson:"inCluster,omitempty"`

	// Plaintext secrets: accepted in requests, never stored or returned.
	BearerToken string `json:"bearerToken,omitempty" bson:"-"`
	Password    string `json:"password,omitempty" bson:"-"`
	// Tell a client whether a secret is stored without revealing it.
	BearerTokenSet bool `json:"bearerTokenSet" bson:"-"`
	PasswordSet    bool `json:"passwordSet" bson:"-"`

	TLSClientConfig *TLSClientConfig `json:"tlsClientConfig,omitempty" bson:"tlsClientConfig,omitempty"`

	SealedBearerToken []byte `json:"-" bson:"bearerToken,omitempty"`
	SealedPassword    []byte `json:"-" bson:"password,omitempty"`
}

// TLSClientConfig says how to trust the cluster's API server.
type TLSClientConfig struct {
	Insecure bool   `json:"insecure,omitempty" bson:"insecure,omitempty"`
	CAFile   string `json:"caFile,omitempty" bson:"caFile,omitempty"`
	// CAData is PEM, plain or base64-encoded (the spec's []byte); sealed at rest.
	CAData       string `json:"caData,omitempty" bson:"-"`
	CADataSet    bool   `json:"caDataSet" bson:"-"`
	SealedCAData []byte `json:"-" bson:"caData,omitempty"`
}

// CloudSecrets are a cloud's secrets in plaintext, for the code that connects to it.
type CloudSecrets struct {
	BearerToken string
	Password    string
	CAData      []byte // PEM
}

// Redact clears plaintext secrets and sets the *Set flags from what is sealed.
func (c *Cloud) Redact() {
	if k := c.Kubernetes; k != nil {
		k.BearerToken, k.Password = "", ""
		k.BearerTokenSet = len(k.SealedBearerToken) > 0
		k.PasswordSet = len(k.SealedPassword) > 0
		if t := k.TLSClientConfig; t != nil {
			t.CAData = ""
			t.CADataSet = len(t.SealedCAData) > 0
		}
	}
}

// CanonicalCloudType returns the canonical spelling of a cloud type, accepted in any case.
func CanonicalCloudType(t string) (string, bool) {
	for _, c := range []string{CloudDocker, CloudKubernetes, CloudLocal} {
		if strings.EqualFold(t, c) {
			return c, true
		}
	}
	return "", false
}

// MaxRunningRecordsLimit bounds a cloud's maxRunningRecords.
const MaxRunningRecordsLimit = 10000

// NormalizeAndValidate checks a cloud as received from a client and canonicalises
// its type and hosts. Hosts are checked for their form here; whether they may be
// reached at all (link-local, metadata addresses) is the caller's check.
func (c *Cloud) NormalizeAndValidate() error {
	if c.Name == "" {
		return fieldErr("name", "is required")
	}
	if err := checkName("name", c.Name); err != nil {
		return err
	}
	t, ok := CanonicalCloudType(c.Type)
	if !ok {
		return fieldErr("type", "%q is not one of Docker, Kubernetes, Local", c.Type)
	}
	c.Type = t
	if c.MaxRunningRecords < 0 || c.MaxRunningRecords > MaxRunningRecordsLimit {
		return fieldErr("maxRunningRecords", "must be between 0 (no limit) and %d", MaxRunningRecordsLimit)
	}
	switch t {
	case CloudDocker:
		c.Kubernetes = nil
		if c.Docker == nil {
			return fieldErr("docker", "is required for a Docker cloud")
		}
		if err := checkDockerHost(c.Docker.Host); err != nil {
			return err
		}
	case CloudKubernetes:
		c.Docker = nil
		k := c.Kubernetes
		if k == nil {
			return fieldErr("kubernetes", "is required for a Kubernetes cloud")
		}
		if !k.InCluster || k.Host != "" {
			host, err := normalizeKubeHost(k.Host)
			if err != nil {
				return err
			}
			k.Host = host
		}
		if k.Namespace == "" {
			return fieldErr("kubernetes.namespace", "is required")
		}
		if !validLabelValue(k.Namespace) {
			return fieldErr("kubernetes.namespace", "%q is not a valid Kubernetes namespace", k.Namespace)
		}
		if k.BearerToken != "" && (k.Username != "" || k.Password != "") {
			return fieldErr("kubernetes.bearerToken", "use either bearerToken or username/password, not both")
		}
		if k.Password != "" && k.Username == "" {
			return fieldErr("kubernetes.username", "is required with a password")
		}
		if tc := k.TLSClientConfig; tc != nil && tc.CAData != "" {
			if _, err := DecodeCAData(tc.CAData); err != nil {
				return fieldErr("kubernetes.tlsClientConfig.caData", "must be PEM, plain or base64-encoded")
			}
		}
	case CloudLocal:
		c.Docker, c.Kubernetes = nil, nil
	}
	return nil
}

// DecodeCAData returns the PEM of a caData field, given as PEM or base64 of PEM.
func DecodeCAData(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		return []byte(s), nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(strings.TrimSpace(string(b)), "-----BEGIN") {
		return nil, fieldErr("caData", "is not PEM")
	}
	return b, nil
}

// checkDockerHost accepts the forms the Docker client does: unix:///path, or
// tcp://, http:// or https:// with a host and port.
func checkDockerHost(h string) error {
	const field = "docker.host"
	if h == "" {
		return fieldErr(field, "is required")
	}
	u, err := url.Parse(h)
	if err != nil {
		return fieldErr(field, "%q is not a URL", h)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" || u.Host != "" {
			return fieldErr(field, "%q: a unix socket is unix:///absolute/path", h)
		}
	case "tcp", "http", "https":
		if u.Hostname() == "" || u.Port() == "" {
			return fieldErr(field, "%q needs a host and a port, e.g. tcp://10.0.0.5:2376", h)
		}
		if u.User != nil {
			return fieldErr(field, "must not carry credentials")
		}
	default:
		return fieldErr(field, "%q: the scheme must be unix, tcp, http or https", h)
	}
	return nil
}

// normalizeKubeHost turns "1.2.3.4" or "1.2.3.4:6443" into an https URL.
func normalizeKubeHost(h string) (string, error) {
	const field = "kubernetes.host"
	if h == "" {
		return "", fieldErr(field, "is required unless inCluster")
	}
	if !strings.Contains(h, "://") {
		h = "https://" + h
	}
	u, err := url.Parse(h)
	if err != nil || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fieldErr(field, "%q is not an http(s) URL or host[:port]", h)
	}
	if u.User != nil {
		return "", fieldErr(field, "must not carry credentials")
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// validLabelValue is Kubernetes' DNS-1123 label rule (namespaces).
func validLabelValue(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(s)-1
		if !ok {
			return false
		}
	}
	return true
}

// WorkerInstance is one running record environment on a cloud: a container or pod
// (the spec's WorkerInstance).
type WorkerInstance struct {
	Name           string    `json:"name"`
	Status         string    `json:"status"`
	CreationTime   time.Time `json:"creationTime"`
	LastUpdateTime time.Time `json:"lastUpdateTime"`
	ProjectName    string    `json:"projectName"`
	PipelineName   string    `json:"pipelineName"`
	RecordID       string    `json:"recordID"`
}
