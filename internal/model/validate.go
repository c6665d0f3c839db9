package model

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// FieldError says which field of a request is wrong and why.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// nameRe is the spec's rule for project, pipeline and record names.
var nameRe = regexp.MustCompile(`^[a-z0-9]+((?:[._-][a-z0-9]+)*){1,29}$`)

// MaxNameLength bounds names; the spec's regex alone allows unbounded length.
const MaxNameLength = 63

// MaxDescriptionLength is the spec's limit for descriptions, in characters.
const MaxDescriptionLength = 100

// ValidName reports whether s is a valid project, pipeline or record name.
func ValidName(s string) bool {
	return len(s) <= MaxNameLength && nameRe.MatchString(s)
}

func checkName(field, name string) *FieldError {
	if !ValidName(name) {
		return fieldErr(field, "%q must match %s and be at most %d characters", name, nameRe, MaxNameLength)
	}
	return nil
}

func checkDescription(field, s string) *FieldError {
	if n := utf8.RuneCountInString(s); n > MaxDescriptionLength {
		return fieldErr(field, "must be at most %d characters, got %d", MaxDescriptionLength, n)
	}
	return nil
}

// CanonicalSCMType returns the canonical spelling of an SCM type, accepted in any case.
func CanonicalSCMType(t string) (string, bool) {
	for _, c := range []string{SCMGithub, SCMGitlab, SCMSVN} {
		if strings.EqualFold(t, c) {
			return c, true
		}
	}
	return "", false
}

// NormalizeAndValidate checks a project as received from a client and canonicalises
// what has several accepted spellings. The name may be empty: the caller derives it
// from the alias.
func (p *Project) NormalizeAndValidate() error {
	if p.Name != "" {
		if err := checkName("name", p.Name); err != nil {
			return err
		}
	}
	if err := checkDescription("description", p.Description); err != nil {
		return err
	}
	if p.SCM == nil {
		return fieldErr("scm", "is required")
	}
	t, ok := CanonicalSCMType(p.SCM.Type)
	if !ok {
		return fieldErr("scm.type", "%q is not one of Github, Gitlab, SVN", p.SCM.Type)
	}
	p.SCM.Type = t
	if strings.TrimSpace(p.SCM.Server) == "" {
		return fieldErr("scm.server", "is required")
	}
	if t == SCMGithub && (p.SCM.Token != "" || p.SCM.Password != "") && p.SCM.Username == "" {
		// GitHub authenticates a token as the password of its user.
		return fieldErr("scm.username", "is required with GitHub credentials")
	}
	if p.Registry != nil {
		if p.Registry.Server == "" {
			return fieldErr("registry.server", "is required")
		}
		if p.Registry.Repository == "" {
			return fieldErr("registry.repository", "is required")
		}
	}
	if p.Worker != nil && p.Worker.Location != nil && p.Worker.Location.CloudName == "" {
		return fieldErr("worker.location.cloudName", "is required")
	}
	return nil
}

// NameFromAlias derives a valid name from an alias: lower case, runs of other
// characters turned into single dashes. It returns "" when nothing usable is left.
func NameFromAlias(alias string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(alias) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
			continue
		}
		dash = true
	}
	name := b.String()
	if len(name) > MaxNameLength-7 { // room for a "-xxxxxx" suffix on clash
		name = strings.TrimRight(name[:MaxNameLength-7], "-")
	}
	if !ValidName(name) {
		return ""
	}
	return name
}

// DefaultPipelineTimeout bounds each stage of a record when the pipeline sets none.
const DefaultPipelineTimeout = 2 * time.Hour

// StageTimeout returns the pipeline's per-stage timeout.
func (p *Pipeline) StageTimeout() time.Duration {
	if d, err := time.ParseDuration(p.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultPipelineTimeout
}

// NormalizeAndValidate checks a pipeline as received from a client.
func (p *Pipeline) NormalizeAndValidate() error {
	if err := checkName("name", p.Name); err != nil {
		return err
	}
	if err := checkDescription("description", p.Description); err != nil {
		return err
	}
	if p.Timeout != "" {
		if d, err := time.ParseDuration(p.Timeout); err != nil || d <= 0 {
			return fieldErr("timeout", "%q is not a positive duration such as 30m or 2h", p.Timeout)
		}
	}
	if p.Build == nil {
		return fieldErr("build", "is required")
	}
	if p.Build.BuilderImage == nil || strings.TrimSpace(p.Build.BuilderImage.Image) == "" {
		return fieldErr("build.builderImage.image", "is required")
	}
	if err := checkEnvVars("build.builderImage.envVars", p.Build.BuilderImage.EnvVars); err != nil {
		return err
	}
	s := p.Build.Stages
	if s == nil || len(s.Configured()) == 0 {
		return fieldErr("build.stages", "must configure at least one stage")
	}
	if err := s.validate(); err != nil {
		return err
	}
	if p.AutoTrigger != nil {
		if err := p.AutoTrigger.validate(s); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stages) validate() error {
	const prefix = "build.stages."
	if c := s.CodeCheckout; c != nil {
		mains := 0
		for i, src := range c.CodeSources {
			field := fmt.Sprintf("%scodeCheckout.codeSources[%d]", prefix, i)
			if src.Main {
				mains++
			}
			switch {
			case strings.EqualFold(src.Type, SCMGithub) || strings.EqualFold(src.Type, SCMGitlab) ||
				strings.EqualFold(src.Type, SCMSVN) || strings.EqualFold(src.Type, "Other"):
			default:
				return fieldErr(field+".type", "%q is not one of Github, Gitlab, SVN, Other", src.Type)
			}
			if err := checkRepoURL(field+".url", src.URL()); err != nil {
				return err
			}
		}
		if mains != 1 {
			return fieldErr(prefix+"codeCheckout.codeSources", "must have exactly one main code source, found %d", mains)
		}
	}
	for _, cs := range []struct {
		name  string
		stage *CommandStage
	}{{StageUnitTest, s.UnitTest}, {StagePackage, s.Package}} {
		if cs.stage != nil {
			if err := checkCommand(prefix+cs.name+".command", cs.stage.Command); err != nil {
				return err
			}
		}
	}
	if c := s.CodeScan; c != nil && c.SonarQube == nil && len(c.Command) == 0 {
		return fieldErr(prefix+"codeScan.sonarqube", "is required")
	}
	if b := s.ImageBuild; b != nil {
		if len(b.BuildInfos) == 0 {
			return fieldErr(prefix+"imageBuild.buildInfos", "must list at least one image")
		}
		for i, bi := range b.BuildInfos {
			if strings.TrimSpace(bi.ImageName) == "" {
				return fieldErr(fmt.Sprintf("%simageBuild.buildInfos[%d].imageName", prefix, i), "is required")
			}
			if !ValidImageName(bi.ImageName) {
				return fieldErr(fmt.Sprintf("%simageBuild.buildInfos[%d].imageName", prefix, i),
					"%q is not an image name (lower-case path such as team/web, optionally :tag)", bi.ImageName)
			}
		}
	}
	if it := s.IntegrationTest; it != nil {
		if it.Config == nil || strings.TrimSpace(it.Config.ImageName) == "" {
			return fieldErr(prefix+"integrationTest.config.imageName", "is required")
		}
		if err := checkCommand(prefix+"integrationTest.config.command", it.Config.Command); err != nil {
			return err
		}
		if err := checkEnvVars(prefix+"integrationTest.config.envVars", it.Config.EnvVars); err != nil {
			return err
		}
		for i, svc := range it.Services {
			field := fmt.Sprintf("%sintegrationTest.services[%d]", prefix, i)
			if err := checkEnvVars(field+".envVars", svc.EnvVars); err != nil {
				return err
			}
			if !ValidName(svc.Name) {
				return fieldErr(field+".name", "%q must be a DNS-friendly name", svc.Name)
			}
			if svc.Image == "" {
				return fieldErr(field+".image", "is required")
			}
		}
	}
	if r := s.ImageRelease; r != nil {
		if len(r.Policies()) == 0 {
			// A release stage that pushes nothing would succeed without doing
			// anything: say so when the pipeline is saved instead.
			return fieldErr(prefix+"imageRelease.releasePolicies", "must list at least one image to release")
		}
		for _, list := range []struct {
			key      string
			policies []ReleasePolicy
		}{{"releasePolicies", r.ReleasePolicies}, {"releasePolicy", r.ReleasePolicy}} {
			for i, pol := range list.policies {
				if err := pol.validate(fmt.Sprintf("%simageRelease.%s[%d]", prefix, list.key, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (pol ReleasePolicy) validate(field string) *FieldError {
	if pol.ImageName == "" {
		return fieldErr(field+".imageName", "is required")
	}
	if !ValidImageName(pol.ImageName) {
		return fieldErr(field+".imageName", "%q is not an image name (lower-case path such as team/web, optionally :tag)", pol.ImageName)
	}
	if pol.Type != ReleaseAlways && pol.Type != ReleaseIntegrationTestSuccess {
		return fieldErr(field+".type", "%q is not one of Always, IntegrationTestSuccess", pol.Type)
	}
	return nil
}

// scpLikeRe matches git's scp-like syntax, user@host:path.
var scpLikeRe = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._/~-]+$`)

// checkRepoURL accepts network repository URLs only: a local path or file:// URL
// would let a pipeline read the worker's own disk.
func checkRepoURL(field, raw string) *FieldError {
	if raw == "" {
		return fieldErr(field, "is required")
	}
	if scpLikeRe.MatchString(raw) {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || strings.HasPrefix(raw, "-") {
		return fieldErr(field, "%q is not a repository URL", raw)
	}
	if _, hasPassword := u.User.Password(); hasPassword {
		// Never echo it back: the message would carry the password.
		return fieldErr(field, "must not hold credentials; give them as otherCodeSource.password or the project's SCM token")
	}
	switch u.Scheme {
	case "http", "https", "ssh", "git", "svn", "svn+ssh":
		return nil
	}
	return fieldErr(field, "scheme %q is not allowed; use http, https, ssh, git or svn", u.Scheme)
}

func checkCommand(field string, cmd []string) *FieldError {
	if len(cmd) == 0 {
		return fieldErr(field, "must list at least one command")
	}
	for i, c := range cmd {
		if strings.TrimSpace(c) == "" {
			return fieldErr(fmt.Sprintf("%s[%d]", field, i), "is empty")
		}
	}
	return nil
}

var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkEnvVars(field string, vars []EnvVar) *FieldError {
	seen := map[string]bool{}
	for i, v := range vars {
		f := fmt.Sprintf("%s[%d].name", field, i)
		if !envNameRe.MatchString(v.Name) {
			return fieldErr(f, "%q is not a valid environment variable name", v.Name)
		}
		if seen[v.Name] {
			return fieldErr(f, "%q is given twice", v.Name)
		}
		seen[v.Name] = true
	}
	return nil
}

// CheckStages validates a list of stage names against the configured stages.
func CheckStages(field string, stages []string, configured *Stages) error {
	have := map[string]bool{}
	for _, s := range configured.Configured() {
		have[s] = true
	}
	for i, name := range stages {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !IsStage(name) {
			return fieldErr(f, "%q is not a stage; stages are %s", name, strings.Join(StageOrder, ", "))
		}
		if !have[name] {
			return fieldErr(f, "stage %q is not configured in the pipeline", name)
		}
	}
	return nil
}

func (a *AutoTrigger) validate(stages *Stages) error {
	if c := a.CronTrigger; c != nil {
		for i, cron := range c.Crons {
			field := fmt.Sprintf("autoTrigger.cronTrigger.crons[%d]", i)
			if strings.TrimSpace(cron.Expression) == "" {
				return fieldErr(field+".expression", "is required")
			}
			switch cron.Overlap {
			case "", OverlapSkip, OverlapBufferOne, OverlapAllowAll:
			default:
				return fieldErr(field+".overlap", "%q is not one of Skip, BufferOne, AllowAll", cron.Overlap)
			}
			if cron.Timezone != "" {
				if _, err := time.LoadLocation(cron.Timezone); err != nil {
					return fieldErr(field+".timezone", "%q is not an IANA time zone", cron.Timezone)
				}
			}
			if err := CheckStages(field+".stages", cron.Stages, stages); err != nil {
				return err
			}
		}
	}
	if t := a.SCMTrigger; t != nil {
		type named struct {
			name   string
			stages []string
		}
		var checks []named
		if t.Push != nil {
			checks = append(checks, named{"push", t.Push.Stages})
		}
		if t.TagRelease != nil {
			checks = append(checks, named{"tagRelease", t.TagRelease.Stages})
		}
		if t.PullRequest != nil {
			checks = append(checks, named{"pullRequest", t.PullRequest.Stages})
		}
		if t.PullRequestComment != nil {
			checks = append(checks, named{"pullRequestComment", t.PullRequestComment.Stages})
		}
		if t.PostCommit != nil {
			checks = append(checks, named{"postCommit", t.PostCommit.Stages})
		}
		for _, c := range checks {
			if err := CheckStages("autoTrigger.scmTrigger."+c.name+".stages", c.stages, stages); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidateRef rejects refs that git would refuse or that could be read as options,
// following the rules of git check-ref-format.
func ValidateRef(field, ref string) error {
	if strings.TrimSpace(ref) == "" {
		return fieldErr(field, "is required")
	}
	bad := func(why string) error { return fieldErr(field, "%q is not a valid ref: %s", ref, why) }
	switch {
	case strings.HasPrefix(ref, "-"):
		return bad("must not start with '-'")
	case strings.Contains(ref, ".."):
		return bad("must not contain '..'")
	case strings.Contains(ref, "@{"):
		return bad("must not contain '@{'")
	case strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".lock"):
		return bad("must not end with '.', '/' or '.lock'")
	case strings.HasPrefix(ref, "/") || strings.Contains(ref, "//"):
		return bad("must not start with '/' or contain '//'")
	case ref == "@":
		return bad("must not be '@'")
	}
	for _, r := range ref {
		if r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\", r) {
			return bad(fmt.Sprintf("must not contain %q", r))
		}
	}
	for _, part := range strings.Split(ref, "/") {
		if strings.HasPrefix(part, ".") {
			return bad("no component may start with '.'")
		}
	}
	return nil
}

// NormalizeAndValidate checks the parameters of a new record against its pipeline.
func (pp *PerformParams) NormalizeAndValidate(p *Pipeline) error {
	if err := ValidateRef("ref", pp.Ref); err != nil {
		return err
	}
	if pp.Name != "" {
		if err := checkName("name", pp.Name); err != nil {
			return err
		}
	}
	if err := checkDescription("description", pp.Description); err != nil {
		return err
	}
	return CheckStages("stages", pp.Stages, p.Build.Stages)
}
