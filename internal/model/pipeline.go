package model

import "time"

// Stage names, in the order a record runs them.
const (
	StageCodeCheckout    = "codeCheckout"
	StageUnitTest        = "unitTest"
	StageCodeScan        = "codeScan"
	StagePackage         = "package"
	StageImageBuild      = "imageBuild"
	StageIntegrationTest = "integrationTest"
	StageImageRelease    = "imageRelease"
)

// StageOrder lists every stage in Cyclone order.
var StageOrder = []string{
	StageCodeCheckout, StageUnitTest, StageCodeScan, StagePackage,
	StageImageBuild, StageIntegrationTest, StageImageRelease,
}

// IsStage reports whether name is one of the seven stage names.
func IsStage(name string) bool {
	for _, s := range StageOrder {
		if s == name {
			return true
		}
	}
	return false
}

// Release policy types.
const (
	ReleaseAlways                 = "Always"
	ReleaseIntegrationTestSuccess = "IntegrationTestSuccess"
)

// Pipeline is the build definition of one application in a project.
type Pipeline struct {
	ID           string        `json:"id" bson:"_id"`
	Name         string        `json:"name" bson:"name"`
	Alias        string        `json:"alias" bson:"alias"`
	Description  string        `json:"description" bson:"description"`
	Owner        string        `json:"owner" bson:"owner"`
	ProjectID    string        `json:"projectID" bson:"projectID"`
	Notification *Notification `json:"notification,omitempty" bson:"notification,omitempty"`
	AutoTrigger  *AutoTrigger  `json:"autoTrigger,omitempty" bson:"autoTrigger,omitempty"`
	Build        *Build        `json:"build" bson:"build"`
	Timeout      string        `json:"timeout,omitempty" bson:"timeout,omitempty"` // Go duration, e.g. "2h"; default 2h
	// Active false deactivates the pipeline's automatic triggers (an idea of the
	// Rancher pipeline API): its crons are paused and SCM events ignored; records
	// can still be started by hand. Absent means active.
	Active         *bool             `json:"active,omitempty" bson:"active,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty" bson:"annotations,omitempty"`
	CreationTime   time.Time         `json:"creationTime" bson:"creationTime"`
	LastUpdateTime time.Time         `json:"lastUpdateTime" bson:"lastUpdateTime"`

	// SVNRepoID is the UUID (`svnlook uuid`) of the Subversion repository of the main
	// code source; a postCommit trigger needs it: the hook URL names the repository by it.
	SVNRepoID string `json:"svnRepoID,omitempty" bson:"svnRepoID,omitempty"`
	// WebhookSecret signs the SCM's webhook deliveries to this pipeline. Accepted in a
	// request (generated when a new pipeline has none), sealed at rest, never returned:
	// WebhookSecretSet says one is stored.
	WebhookSecret       string `json:"webhookSecret,omitempty" bson:"-"`
	WebhookSecretSet    bool   `json:"webhookSecretSet,omitempty" bson:"-"`
	SealedWebhookSecret []byte `json:"-" bson:"webhookSecret,omitempty"`
	// Webhook is where the SCM delivers events to this pipeline, set by the server.
	Webhook *PipelineWebhook `json:"webhook,omitempty" bson:"webhook,omitempty"`
}

// PipelineWebhook is the pipeline's webhook, kept by the server: the URL the SCM
// delivers to and, when the server registered it on GitHub or GitLab, its ID there.
type PipelineWebhook struct {
	URL    string   `json:"url" bson:"url"`
	Repo   string   `json:"repo,omitempty" bson:"repo,omitempty"`     // repository it is registered on
	ID     string   `json:"id,omitempty" bson:"id,omitempty"`         // hook ID on the SCM; "": not registered by Cyclone
	Events []string `json:"events,omitempty" bson:"events,omitempty"` // scm.Event* it was registered for
}

// IsActive reports whether the pipeline's automatic triggers run.
func (p *Pipeline) IsActive() bool { return p.Active == nil || *p.Active }

// Notification is kept as given; sending notifications is not implemented.
type Notification struct {
	Policy    string     `json:"policy,omitempty" bson:"policy,omitempty"`
	Receivers []Receiver `json:"receivers,omitempty" bson:"receivers,omitempty"`
}

// Receiver of a notification.
type Receiver struct {
	Type      string   `json:"type" bson:"type"`
	Addresses []string `json:"addresses,omitempty" bson:"addresses,omitempty"`
	Groups    []string `json:"groups,omitempty" bson:"groups,omitempty"`
}

// AutoTrigger starts records without a user: SCM events and cron.
type AutoTrigger struct {
	CronTrigger *CronTrigger `json:"cronTrigger,omitempty" bson:"cronTrigger,omitempty"`
	SCMTrigger  *SCMTrigger  `json:"scmTrigger,omitempty" bson:"scmTrigger,omitempty"`
}

// CronTrigger holds cron schedules.
type CronTrigger struct {
	Crons []Cron `json:"crons" bson:"crons"`
}

// Cron is one schedule; Timezone is an IANA zone name (default UTC).
type Cron struct {
	Expression string   `json:"expression" bson:"expression"`
	Timezone   string   `json:"timezone,omitempty" bson:"timezone,omitempty"`
	Stages     []string `json:"stages,omitempty" bson:"stages,omitempty"`
	// Overlap says what a run due while the previous cron record still runs does:
	// OverlapSkip (the default), OverlapBufferOne or OverlapAllowAll.
	Overlap string `json:"overlap,omitempty" bson:"overlap,omitempty"`

	// From the cron's Temporal Schedule, when the pipeline is read.
	NextRunTimes []time.Time `json:"nextRunTimes,omitempty" bson:"-"`
	Paused       bool        `json:"paused,omitempty" bson:"-"`
}

// Cron overlap policies.
const (
	OverlapSkip      = "Skip"      // skip the run
	OverlapBufferOne = "BufferOne" // run it once the previous record ends (at most one waits)
	OverlapAllowAll  = "AllowAll"  // run it alongside
)

// SCMTrigger maps SCM events to the stages they run.
type SCMTrigger struct {
	Push               *PushTrigger    `json:"push,omitempty" bson:"push,omitempty"`
	TagRelease         *StagesTrigger  `json:"tagRelease,omitempty" bson:"tagRelease,omitempty"`
	PullRequest        *StagesTrigger  `json:"pullRequest,omitempty" bson:"pullRequest,omitempty"`
	PullRequestComment *CommentTrigger `json:"pullRequestComment,omitempty" bson:"pullRequestComment,omitempty"`
	PostCommit         *StagesTrigger  `json:"postCommit,omitempty" bson:"postCommit,omitempty"`
}

// StagesTrigger runs the given stages.
type StagesTrigger struct {
	Stages []string `json:"stages" bson:"stages"`
}

// PushTrigger runs stages for pushes to matching branches.
type PushTrigger struct {
	Stages   []string `json:"stages" bson:"stages"`
	Branches []string `json:"branches,omitempty" bson:"branches,omitempty"`
}

// CommentTrigger runs stages when a pull request comment matches.
type CommentTrigger struct {
	Stages   []string `json:"stages" bson:"stages"`
	Comments []string `json:"comments,omitempty" bson:"comments,omitempty"`
}

// Build is how a pipeline builds: the builder image and the stages.
type Build struct {
	BuilderImage *BuilderImage `json:"builderImage" bson:"builderImage"`
	Stages       *Stages       `json:"stages" bson:"stages"`
}

// BuilderImage is the image command stages run in.
type BuilderImage struct {
	Image   string   `json:"image" bson:"image"`
	EnvVars []EnvVar `json:"envVars,omitempty" bson:"envVars,omitempty"`
}

// EnvVar is a name/value pair given to a step. A Secret value is masked in logs.
type EnvVar struct {
	Name  string `json:"name" bson:"name"`
	Value string `json:"value" bson:"value"`
	// Secret values are sealed at rest, never returned (ValueSet says one is
	// stored), kept out of workflow histories and masked in logs.
	Secret      bool   `json:"secret,omitempty" bson:"secret,omitempty"`
	ValueSet    bool   `json:"valueSet,omitempty" bson:"-"`
	SealedValue []byte `json:"-" bson:"sealedValue,omitempty"`
}

// EnvVarRef locates an environment variable of a pipeline; Path is stable across
// edits that reorder the list (it names the variable, not its index).
type EnvVarRef struct {
	Path string
	Var  *EnvVar
}

// EnvVarRefs lists every environment variable of the build: the builder image's,
// the integration test's and its services'.
func (b *Build) EnvVarRefs() []EnvVarRef {
	if b == nil {
		return nil
	}
	var out []EnvVarRef
	add := func(prefix string, vars []EnvVar) {
		for i := range vars {
			out = append(out, EnvVarRef{Path: prefix + "[" + vars[i].Name + "]", Var: &vars[i]})
		}
	}
	if b.BuilderImage != nil {
		add("builderImage.envVars", b.BuilderImage.EnvVars)
	}
	if s := b.Stages; s != nil && s.IntegrationTest != nil {
		if c := s.IntegrationTest.Config; c != nil {
			add("integrationTest.config.envVars", c.EnvVars)
		}
		for _, svc := range s.IntegrationTest.Services {
			add("integrationTest.services["+svc.Name+"].envVars", svc.EnvVars)
		}
	}
	return out
}

// Redact clears secret values and flags which are stored, so the pipeline can be
// rendered to a client.
func (p *Pipeline) Redact() {
	p.WebhookSecret, p.WebhookSecretSet = "", len(p.SealedWebhookSecret) > 0
	for _, ref := range p.Build.EnvVarRefs() {
		if ref.Var.Secret {
			ref.Var.Value = ""
			ref.Var.ValueSet = len(ref.Var.SealedValue) > 0
		}
	}
	for i := range codeSourcesOf(p) {
		if o := p.Build.Stages.CodeCheckout.CodeSources[i].OtherCodeSource; o != nil {
			o.Password = ""
			o.PasswordSet = len(o.SealedPassword) > 0
		}
	}
}

func codeSourcesOf(p *Pipeline) []CodeSource {
	if p.Build == nil || p.Build.Stages == nil || p.Build.Stages.CodeCheckout == nil {
		return nil
	}
	return p.Build.Stages.CodeCheckout.CodeSources
}

// Stages configures each stage; a nil stage is not configured.
type Stages struct {
	CodeCheckout    *CodeCheckoutStage    `json:"codeCheckout,omitempty" bson:"codeCheckout,omitempty"`
	UnitTest        *CommandStage         `json:"unitTest,omitempty" bson:"unitTest,omitempty"`
	CodeScan        *CodeScanStage        `json:"codeScan,omitempty" bson:"codeScan,omitempty"`
	Package         *CommandStage         `json:"package,omitempty" bson:"package,omitempty"`
	ImageBuild      *ImageBuildStage      `json:"imageBuild,omitempty" bson:"imageBuild,omitempty"`
	IntegrationTest *IntegrationTestStage `json:"integrationTest,omitempty" bson:"integrationTest,omitempty"`
	ImageRelease    *ImageReleaseStage    `json:"imageRelease,omitempty" bson:"imageRelease,omitempty"`
}

// Configured lists the configured stages in Cyclone order.
func (s *Stages) Configured() []string {
	if s == nil {
		return nil
	}
	set := map[string]bool{
		StageCodeCheckout:    s.CodeCheckout != nil,
		StageUnitTest:        s.UnitTest != nil,
		StageCodeScan:        s.CodeScan != nil,
		StagePackage:         s.Package != nil,
		StageImageBuild:      s.ImageBuild != nil,
		StageIntegrationTest: s.IntegrationTest != nil,
		StageImageRelease:    s.ImageRelease != nil,
	}
	var out []string
	for _, name := range StageOrder {
		if set[name] {
			out = append(out, name)
		}
	}
	return out
}

// AllowFailure reports whether a failure of the named stage lets the record go on.
func (s *Stages) AllowFailure(stage string) bool {
	switch {
	case s == nil:
		return false
	case stage == StagePackage && s.Package != nil:
		return s.Package.AllowFailure
	case stage == StageCodeScan && s.CodeScan != nil:
		return s.CodeScan.AllowFailure
	case stage == StageIntegrationTest && s.IntegrationTest != nil:
		return s.IntegrationTest.AllowFailure
	case stage == StageImageRelease && s.ImageRelease != nil:
		return s.ImageRelease.AllowFailure
	}
	return false
}

// CodeCheckoutStage lists the code sources; exactly one is the main one.
type CodeCheckoutStage struct {
	CodeSources []CodeSource `json:"codeSources" bson:"codeSources"`
}

// Main returns the main code source, or nil.
func (c *CodeCheckoutStage) Main() *CodeSource {
	if c == nil {
		return nil
	}
	for i := range c.CodeSources {
		if c.CodeSources[i].Main {
			return &c.CodeSources[i]
		}
	}
	return nil
}

// CodeSource is one repository to check out.
type CodeSource struct {
	Type            string           `json:"type" bson:"type"`
	Main            bool             `json:"main" bson:"main"`
	GitHub          *GitSource       `json:"gitHub,omitempty" bson:"gitHub,omitempty"`
	GitLab          *GitSource       `json:"gitLab,omitempty" bson:"gitLab,omitempty"`
	OtherCodeSource *OtherCodeSource `json:"otherCodeSource,omitempty" bson:"otherCodeSource,omitempty"`
	Folder          string           `json:"folder,omitempty" bson:"folder,omitempty"`
}

// URL returns the repository URL of whichever source kind is set.
func (c *CodeSource) URL() string {
	switch {
	case c.GitHub != nil:
		return c.GitHub.URL
	case c.GitLab != nil:
		return c.GitLab.URL
	case c.OtherCodeSource != nil:
		return c.OtherCodeSource.URL
	}
	return ""
}

// GitSource is a GitHub or GitLab repository.
type GitSource struct {
	Ref string `json:"ref,omitempty" bson:"ref,omitempty"`
	URL string `json:"url" bson:"url"`
}

// OtherCodeSource is any other repository (plain git or SVN).
type OtherCodeSource struct {
	URL      string `json:"url" bson:"url"`
	Path     string `json:"path,omitempty" bson:"path,omitempty"`
	Username string `json:"username,omitempty" bson:"username,omitempty"`
	Password string `json:"password,omitempty" bson:"-"`

	PasswordSet    bool   `json:"passwordSet,omitempty" bson:"-"`
	SealedPassword []byte `json:"-" bson:"password,omitempty"`
}

// CommandStage runs commands in the builder image (unitTest, package).
type CommandStage struct {
	Command      []string `json:"command" bson:"command"`
	Outputs      []string `json:"outputs,omitempty" bson:"outputs,omitempty"`
	AllowFailure bool     `json:"allowFailure,omitempty" bson:"allowFailure,omitempty"`
}

// CodeScanStage scans the code with a SonarQube integration.
type CodeScanStage struct {
	SonarQube    *SonarQubeScan `json:"sonarqube,omitempty" bson:"sonarqube,omitempty"`
	Command      []string       `json:"command,omitempty" bson:"command,omitempty"`
	Outputs      []string       `json:"outputs,omitempty" bson:"outputs,omitempty"`
	AllowFailure bool           `json:"allowFailure,omitempty" bson:"allowFailure,omitempty"`
}

// SonarQubeScan names the integration and the scan settings.
type SonarQubeScan struct {
	Name   string           `json:"name" bson:"name"`
	Config *SonarScanConfig `json:"config,omitempty" bson:"config,omitempty"`
}

// SonarScanConfig are sonar-scanner settings.
type SonarScanConfig struct {
	SourcePath    string `json:"sourcePath,omitempty" bson:"sourcePath,omitempty"`
	EncodingStyle string `json:"encodingStyle,omitempty" bson:"encodingStyle,omitempty"`
	Language      string `json:"language,omitempty" bson:"language,omitempty"`
	Threshold     string `json:"threshold,omitempty" bson:"threshold,omitempty"`
}

// ImageBuildStage builds one image per build info.
type ImageBuildStage struct {
	BuildInfos []BuildInfo `json:"buildInfos" bson:"buildInfos"`
}

// BuildInfo describes one image to build.
type BuildInfo struct {
	TaskName       string `json:"taskName,omitempty" bson:"taskName,omitempty"`
	ContextDir     string `json:"contextDir,omitempty" bson:"contextDir,omitempty"`
	Dockerfile     string `json:"dockerfile,omitempty" bson:"dockerfile,omitempty"`
	DockerfilePath string `json:"dockerfilePath,omitempty" bson:"dockerfilePath,omitempty"`
	ImageName      string `json:"imageName" bson:"imageName"`
}

// IntegrationTestStage runs a command next to service containers.
type IntegrationTestStage struct {
	Config       *IntegrationTestConfig `json:"config" bson:"config"`
	Services     []Service              `json:"services,omitempty" bson:"services,omitempty"`
	AllowFailure bool                   `json:"allowFailure,omitempty" bson:"allowFailure,omitempty"`
}

// IntegrationTestConfig is the test command and the image it runs in.
type IntegrationTestConfig struct {
	Command   []string `json:"command" bson:"command"`
	EnvVars   []EnvVar `json:"envVars,omitempty" bson:"envVars,omitempty"`
	ImageName string   `json:"imageName" bson:"imageName"`
}

// Service is a container started for an integration test.
type Service struct {
	Name    string   `json:"name" bson:"name"`
	Image   string   `json:"image" bson:"image"`
	Command []string `json:"command,omitempty" bson:"command,omitempty"`
	EnvVars []EnvVar `json:"envVars,omitempty" bson:"envVars,omitempty"`
}

// ImageReleaseStage pushes built images by policy. The spec spells the list both
// "releasePolicy" and "releasePolicies"; both are read, and Policies merges them.
type ImageReleaseStage struct {
	ReleasePolicies []ReleasePolicy `json:"releasePolicies,omitempty" bson:"releasePolicies,omitempty"`
	ReleasePolicy   []ReleasePolicy `json:"releasePolicy,omitempty" bson:"releasePolicy,omitempty"`
	AllowFailure    bool            `json:"allowFailure,omitempty" bson:"allowFailure,omitempty"`
}

// Policies returns every release policy whichever key it came under.
func (s *ImageReleaseStage) Policies() []ReleasePolicy {
	return append(append([]ReleasePolicy(nil), s.ReleasePolicies...), s.ReleasePolicy...)
}

// ReleasePolicy says when an image is pushed.
type ReleasePolicy struct {
	ImageName string `json:"imageName" bson:"imageName"`
	Type      string `json:"type" bson:"type"`
}

// ListedPipeline is a pipeline with its recent records, as the list endpoint renders it.
type ListedPipeline struct {
	*Pipeline
	RecentRecords        []*Record `json:"recentRecords,omitempty"`
	RecentSuccessRecords []*Record `json:"recentSuccessRecords,omitempty"`
	RecentFailedRecords  []*Record `json:"recentFailedRecords,omitempty"`
}

// RecentOf is the list of recent records of a status: "" for every status,
// StatusSuccess or StatusFailed.
func (lp *ListedPipeline) RecentOf(status string) *[]*Record {
	switch status {
	case StatusSuccess:
		return &lp.RecentSuccessRecords
	case StatusFailed:
		return &lp.RecentFailedRecords
	}
	return &lp.RecentRecords
}

// ConfigTemplate is a starting point for a pipeline of one build tool.
type ConfigTemplate struct {
	Name                 string `json:"name"`
	Type                 string `json:"type"`
	BuilderImage         string `json:"builderImage"`
	TestCommands         string `json:"testCommands"`
	PackageCommands      string `json:"packageCommands"`
	CustomizedDockerfile string `json:"customizedDockerfile"`
}
