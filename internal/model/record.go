package model

import "time"

// Record and stage statuses.
const (
	StatusPending = "Pending"
	StatusRunning = "Running"
	StatusSuccess = "Success"
	StatusFailed  = "Failed"
	StatusAborted = "Aborted"
)

// IsTerminal reports whether a record or stage status is final.
func IsTerminal(status string) bool {
	return status == StatusSuccess || status == StatusFailed || status == StatusAborted
}

// Triggers: who started a record.
const (
	TriggerUser = "user"
	TriggerSCM  = "scmTrigger"
	TriggerCron = "cronTrigger"
)

// PerformParams are what a record was asked to do.
type PerformParams struct {
	Ref             string   `json:"ref" bson:"ref"`
	Name            string   `json:"name,omitempty" bson:"name,omitempty"`
	Description     string   `json:"description,omitempty" bson:"description,omitempty"`
	CreateSCMTag    bool     `json:"createScmTag" bson:"createScmTag"`
	CacheDependency bool     `json:"cacheDependency,omitempty" bson:"cacheDependency,omitempty"`
	Stages          []string `json:"stages,omitempty" bson:"stages,omitempty"`
	// Commit is the commit an SCM event named (a webhook's SHA, a Subversion revision).
	Commit string `json:"commit,omitempty" bson:"commit,omitempty"`
}

// Record is one run of a pipeline: the projection of its Temporal workflow.
type Record struct {
	ID            string         `json:"id" bson:"_id"`
	Name          string         `json:"name" bson:"name"`
	ProjectID     string         `json:"projectID" bson:"projectID"`
	PipelineID    string         `json:"pipelineID" bson:"pipelineID"`
	Trigger       string         `json:"trigger" bson:"trigger"`
	PerformParams *PerformParams `json:"performParams" bson:"performParams"`
	StageStatus   *StageStatus   `json:"stageStatus" bson:"stageStatus"`
	Status        string         `json:"status" bson:"status"`
	ErrorMessage  string         `json:"errorMessage,omitempty" bson:"errorMessage,omitempty"`
	StartTime     time.Time      `json:"startTime" bson:"startTime"`
	EndTime       *time.Time     `json:"endTime,omitempty" bson:"endTime,omitempty"`
	// StartBucket is StartTime in Unix seconds truncated to 15 minutes, for per-day stats in any zone.
	StartBucket int64 `json:"-" bson:"startBucket"`
	// WorkflowID and RunID locate the run in Temporal (Web UI, CLI).
	WorkflowID string `json:"workflowID" bson:"workflowID"`
	RunID      string `json:"runID,omitempty" bson:"runID,omitempty"`
	// QueuePosition is the record's place among the records waiting for room on its
	// cloud (1: next to start), while it waits.
	QueuePosition int64 `json:"queuePosition,omitempty" bson:"queuePosition,omitempty"`
	// CountedLevel is how much of the record the store's derived data (day counters,
	// recent-records summaries) already holds; the store alone reads and writes it.
	CountedLevel int `json:"-" bson:"countedLevel,omitempty"`
}

// StageStatus holds one entry per stage the record performs.
type StageStatus struct {
	CodeCheckout    *CodeCheckoutStatus `json:"codeCheckout,omitempty" bson:"codeCheckout,omitempty"`
	UnitTest        *GeneralStageStatus `json:"unitTest,omitempty" bson:"unitTest,omitempty"`
	CodeScan        *CodeScanStatus     `json:"codeScan,omitempty" bson:"codeScan,omitempty"`
	Package         *GeneralStageStatus `json:"package,omitempty" bson:"package,omitempty"`
	ImageBuild      *TasksStatus        `json:"imageBuild,omitempty" bson:"imageBuild,omitempty"`
	IntegrationTest *GeneralStageStatus `json:"integrationTest,omitempty" bson:"integrationTest,omitempty"`
	ImageRelease    *TasksStatus        `json:"imageRelease,omitempty" bson:"imageRelease,omitempty"`
}

// GeneralStageStatus is the status every stage has.
type GeneralStageStatus struct {
	Status       string     `json:"status" bson:"status"`
	ErrorMessage string     `json:"errorMessage,omitempty" bson:"errorMessage,omitempty"`
	StartTime    *time.Time `json:"startTime,omitempty" bson:"startTime,omitempty"`
	EndTime      *time.Time `json:"endTime,omitempty" bson:"endTime,omitempty"`
}

// CodeCheckoutStatus adds the checked-out commits.
type CodeCheckoutStatus struct {
	GeneralStageStatus `bson:",inline"`
	Commits            *Commits `json:"commits,omitempty" bson:"commits,omitempty"`
}

// Commits are the commits a record checked out.
type Commits struct {
	MainRepo *Commit  `json:"mainRepo,omitempty" bson:"mainRepo,omitempty"`
	DepRepos []Commit `json:"depRepos,omitempty" bson:"depRepos,omitempty"`
}

// Commit is one checked-out commit (field names as the spec spells them).
type Commit struct {
	ID      string `json:"ID" bson:"id"`
	Author  string `json:"Author" bson:"author"`
	Date    string `json:"Date" bson:"date"`
	Message string `json:"Message" bson:"message"`
}

// CodeScanStatus adds SonarQube results.
type CodeScanStatus struct {
	GeneralStageStatus `bson:",inline"`
	SonarQube          *SonarQubeResult `json:"sonarqube,omitempty" bson:"sonarqube,omitempty"`
}

// SonarQubeResult is what a scan measured.
type SonarQubeResult struct {
	Measures     []Measure `json:"measures,omitempty" bson:"measures,omitempty"`
	OverviewLink string    `json:"overviewLink,omitempty" bson:"overviewLink,omitempty"`
}

// Measure is one SonarQube metric value.
type Measure struct {
	Metric string `json:"metric" bson:"metric"`
	Value  string `json:"value" bson:"value"`
}

// TasksStatus is the status of a stage made of tasks (imageBuild, imageRelease).
type TasksStatus struct {
	GeneralStageStatus `bson:",inline"`
	Images             []string     `json:"images,omitempty" bson:"images,omitempty"`
	Tasks              []TaskStatus `json:"tasks,omitempty" bson:"tasks,omitempty"`
}

// TaskStatus is one task of a multi-task stage.
type TaskStatus struct {
	Name      string     `json:"name" bson:"name"`
	Status    string     `json:"status" bson:"status"`
	Image     string     `json:"image,omitempty" bson:"image,omitempty"`
	StartTime *time.Time `json:"startTime,omitempty" bson:"startTime,omitempty"`
	EndTime   *time.Time `json:"endTime,omitempty" bson:"endTime,omitempty"`
}

// StageUpdate is a change to one stage's status, written by the workflow's activities.
// Only the set fields are applied (an empty Status leaves the status as it is).
type StageUpdate struct {
	Stage        string     `json:"stage"`
	Status       string     `json:"status"`
	ErrorMessage string     `json:"errorMessage,omitempty"`
	StartTime    *time.Time `json:"startTime,omitempty"`
	EndTime      *time.Time `json:"endTime,omitempty"`
	Commit       *Commit    `json:"commit,omitempty"`
	// Tasks, when set, replaces the stage's task list (imageBuild, imageRelease).
	Tasks []TaskStatus `json:"tasks,omitempty"`
	// Images, when set, replaces the stage's image list (imageRelease).
	Images []string `json:"images,omitempty"`
	// SonarQube, when set, replaces the stage's SonarQube results (codeScan).
	SonarQube *SonarQubeResult `json:"sonarqube,omitempty"`
}

// Of returns the status of the named stage, or nil when the record has none for it.
func (ss *StageStatus) Of(stage string) *GeneralStageStatus {
	if ss == nil {
		return nil
	}
	switch stage {
	case StageCodeCheckout:
		if ss.CodeCheckout != nil {
			return &ss.CodeCheckout.GeneralStageStatus
		}
	case StageUnitTest:
		return ss.UnitTest
	case StageCodeScan:
		if ss.CodeScan != nil {
			return &ss.CodeScan.GeneralStageStatus
		}
	case StagePackage:
		return ss.Package
	case StageImageBuild:
		if ss.ImageBuild != nil {
			return &ss.ImageBuild.GeneralStageStatus
		}
	case StageIntegrationTest:
		return ss.IntegrationTest
	case StageImageRelease:
		if ss.ImageRelease != nil {
			return &ss.ImageRelease.GeneralStageStatus
		}
	}
	return nil
}
