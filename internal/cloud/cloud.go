// Package cloud talks to the clouds records run on, as the API describes them
// (model.Cloud): it pings them and lists the record environments running there.
// A Docker cloud is reached with the Docker client at its host; a Kubernetes cloud
// with client-go at its API server, authenticated with the cloud's secrets.
package cloud

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"time"

	dockerclient "github.com/docker/docker/client"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cycloneci/cyclone/internal/executor"
	"github.com/cycloneci/cyclone/internal/executor/docker"
	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
)

// ErrUnsupported means the cloud's type has no such operation.
var ErrUnsupported = errors.New("not supported for this cloud type")

// Secrets opens a cloud's sealed secrets.
type Secrets interface {
	CloudSecrets(c *model.Cloud) (*model.CloudSecrets, error)
}

// Prober pings clouds and lists their workers.
type Prober struct {
	Secrets Secrets
	// Timeout bounds each call to a cloud (default 5s).
	Timeout time.Duration
	// Local lists the record environments of the Local cloud (the worker's own
	// executor when it runs in this process); nil lists none.
	Local executor.Lister
	// NewKubeClient makes the client of a Kubernetes cloud (default: client-go's
	// clientset for the config); tests give a fake clientset.
	NewKubeClient func(cfg *rest.Config) (kubernetes.Interface, error)
}

func (p *Prober) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return 5 * time.Second
}

// Ping returns nil when the cloud answers: the Docker engine's ping, the Kubernetes
// API server's /version.
func (p *Prober) Ping(ctx context.Context, c *model.Cloud) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	switch c.Type {
	case model.CloudDocker:
		cli, err := p.dockerClient(ctx, c.Docker)
		if err != nil {
			return err
		}
		defer cli.Close()
		if _, err := cli.Ping(ctx); err != nil {
			return fmt.Errorf("ping the Docker engine: %w", err)
		}
		return nil
	case model.CloudKubernetes:
		cs, err := p.kube(ctx, c)
		if err != nil {
			return err
		}
		// GET /version, under the call's deadline (cfg.Timeout).
		if _, err := cs.Discovery().ServerVersion(); err != nil {
			return fmt.Errorf("ask the Kubernetes API server its version: %w", err)
		}
		return nil
	case model.CloudLocal:
		return nil // the worker's own host
	}
	return ErrUnsupported
}

// Workers lists the record environments running on the cloud: the step containers
// on a Docker engine (and records between two steps, "Idle"), the pods of namespace
// (default: the cloud's) on Kubernetes.
func (p *Prober) Workers(ctx context.Context, c *model.Cloud, namespace string) ([]model.WorkerInstance, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	switch c.Type {
	case model.CloudDocker:
		cli, err := p.dockerClient(ctx, c.Docker)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		list, err := docker.New(cli, "").List(ctx)
		if err != nil {
			return nil, err
		}
		return Workers(list), nil
	case model.CloudLocal:
		if p.Local == nil {
			return nil, nil
		}
		list, err := p.Local.List(ctx)
		if err != nil {
			return nil, err
		}
		return Workers(list), nil
	case model.CloudKubernetes:
		cs, err := p.kube(ctx, c)
		if err != nil {
			return nil, err
		}
		if namespace == "" {
			namespace = c.Kubernetes.Namespace
		}
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: executor.LabelManaged + "=true"})
		if err != nil {
			return nil, fmt.Errorf("list pods in %s: %w", namespace, err)
		}
		out := []model.WorkerInstance{}
		for _, pod := range pods.Items {
			l := pod.Labels
			updated := pod.CreationTimestamp.UTC()
			for _, cond := range pod.Status.Conditions {
				if t := cond.LastTransitionTime.UTC(); t.After(updated) {
					updated = t
				}
			}
			out = append(out, model.WorkerInstance{
				Name: pod.Name, Status: string(pod.Status.Phase),
				CreationTime: pod.CreationTimestamp.UTC(), LastUpdateTime: updated,
				ProjectName: l[executor.LabelProject], PipelineName: l[executor.LabelPipeline], RecordID: l[executor.LabelRecord],
			})
		}
		return out, nil
	}
	return nil, ErrUnsupported
}

// Workers turns an executor's instances into the workers list: each container is a
// worker; a record whose environment exists without a container (between two
// steps) is one worker named after its environment, "Idle".
func Workers(list []executor.Instance) []model.WorkerInstance {
	out := []model.WorkerInstance{}
	withContainer := map[string]bool{}
	for _, in := range list {
		if in.Kind != executor.KindContainer && in.Kind != executor.KindPod {
			continue
		}
		withContainer[in.Record.ID] = true
		status := "Running"
		if !in.Running {
			status = capitalize(in.State)
		}
		out = append(out, worker(in, in.Name, status))
	}
	for _, in := range list {
		if in.Kind != executor.KindNetwork || withContainer[in.Record.ID] {
			continue
		}
		withContainer[in.Record.ID] = true
		out = append(out, worker(in, in.Name, "Idle"))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreationTime.Before(out[j].CreationTime) })
	return out
}

func worker(in executor.Instance, name, status string) model.WorkerInstance {
	return model.WorkerInstance{
		Name: name, Status: status, CreationTime: in.Created, LastUpdateTime: in.Created,
		ProjectName: in.Record.Project, PipelineName: in.Record.Pipeline, RecordID: in.Record.ID,
	}
}

func capitalize(s string) string {
	if s == "" {
		return "Unknown"
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// DockerClient returns a client of the cloud's engine. With certPath, it uses the
// engine's TLS files there (ca.pem, cert.pem, key.pem), as the docker CLI does.
func DockerClient(d *model.DockerCloud) (*dockerclient.Client, error) {
	if d == nil || d.Host == "" {
		return nil, errors.New("the cloud has no Docker host")
	}
	host := d.Host
	if strings.HasPrefix(host, "http://") {
		host = "tcp://" + strings.TrimPrefix(host, "http://")
	}
	opts := []dockerclient.Opt{dockerclient.WithHost(host), dockerclient.WithAPIVersionNegotiation()}
	switch {
	case d.CertPath != "":
		opts = append(opts, dockerclient.WithTLSClientConfig(
			filepath.Join(d.CertPath, "ca.pem"), filepath.Join(d.CertPath, "cert.pem"), filepath.Join(d.CertPath, "key.pem")))
	case strings.HasPrefix(d.Host, "https://") && d.Insecure:
		opts = append(opts, dockerclient.WithHTTPClient(&http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // the cloud says so
		}}), dockerclient.WithScheme("https"))
	}
	cli, err := dockerclient.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", d.Host, err)
	}
	return cli, nil
}

// CheckHostURL is the URL guard of SCM servers (scm.CheckURLOffline) applied to a
// cloud's network host when the cloud is saved: no link-local or metadata address,
// no credentials in the URL. The name is checked again on connection (checkHost).
func CheckHostURL(u string) error { return scm.CheckURLOffline("", u) }

// checkHost applies the URL guard to the address a network host resolves to now,
// right before connecting; a unix socket passes.
func checkHost(ctx context.Context, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "unix" || u.Hostname() == "" {
		return nil
	}
	if err := scm.CheckHost(ctx, u.Hostname()); err != nil {
		return fmt.Errorf("cloud host %s: %w", u.Hostname(), err)
	}
	return nil
}

// KubeConfig is the client-go configuration of a Kubernetes cloud.
func KubeConfig(c *model.Cloud, sec *model.CloudSecrets) (*rest.Config, error) {
	k := c.Kubernetes
	if k == nil {
		return nil, errors.New("the cloud has no Kubernetes configuration")
	}
	if k.InCluster && k.Host == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes configuration: %w", err)
		}
		return cfg, nil
	}
	cfg := &rest.Config{
		Host: k.Host, BearerToken: sec.BearerToken, Username: k.Username, Password: sec.Password,
		Timeout: 30 * time.Second,
	}
	if t := k.TLSClientConfig; t != nil {
		cfg.TLSClientConfig = rest.TLSClientConfig{Insecure: t.Insecure, CAFile: t.CAFile, CAData: sec.CAData}
	}
	return cfg, nil
}

func (p *Prober) dockerClient(ctx context.Context, d *model.DockerCloud) (*dockerclient.Client, error) {
	if d != nil {
		if err := checkHost(ctx, strings.Replace(d.Host, "tcp://", "http://", 1)); err != nil {
			return nil, err
		}
	}
	return DockerClient(d)
}

// ExecutorRESTConfig is the client-go configuration of a worker's kubernetes
// executor on a Kubernetes cloud: the cloud's host, credentials and CA (its secrets
// opened with s), the host passing the URL guard as for a ping. It has no overall
// request timeout: a step's log is followed for as long as the step runs.
func ExecutorRESTConfig(ctx context.Context, c *model.Cloud, s Secrets) (*rest.Config, error) {
	if c.Type != model.CloudKubernetes {
		return nil, fmt.Errorf("cloud %s is a %s cloud, not Kubernetes", c.Name, c.Type)
	}
	cfg, err := restConfig(ctx, c, s)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 0
	return cfg, nil
}

// restConfig is KubeConfig for a cloud whose secrets s opens, after the URL guard.
func restConfig(ctx context.Context, c *model.Cloud, s Secrets) (*rest.Config, error) {
	if c.Kubernetes != nil && c.Kubernetes.Host != "" {
		if err := checkHost(ctx, c.Kubernetes.Host); err != nil {
			return nil, err
		}
	}
	sec := &model.CloudSecrets{}
	if s != nil {
		var err error
		if sec, err = s.CloudSecrets(c); err != nil {
			return nil, fmt.Errorf("open the cloud's secrets: %w", err)
		}
	}
	return KubeConfig(c, sec)
}

func (p *Prober) kube(ctx context.Context, c *model.Cloud) (kubernetes.Interface, error) {
	cfg, err := restConfig(ctx, c, p.Secrets)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = p.timeout()
	newClient := p.NewKubeClient
	if newClient == nil {
		newClient = func(cfg *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(cfg) }
	}
	cs, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	return cs, nil
}
