package workflows_test

import (
	"context"
	"sync"

	"github.com/cycloneci/cyclone/activities"
	"github.com/cycloneci/cyclone/internal/model"
)

// releaseInput runs the record with integrationTest ending in itErr (allowed to
// fail) and returns the input imageRelease was given.
func (s *RecordSuite) releaseInput(itErr error, stages ...string) activities.StageInput {
	var mu sync.Mutex
	var release *activities.StageInput
	s.runStage = func(_ context.Context, in activities.StageInput) error {
		switch in.Stage {
		case model.StageIntegrationTest:
			return itErr
		case model.StageImageRelease:
			mu.Lock()
			release = &in
			mu.Unlock()
		}
		return nil
	}
	in := recordInput(stages...)
	in.Build.Stages.IntegrationTest.AllowFailure = true
	s.NoError(s.run(in))
	mu.Lock()
	defer mu.Unlock()
	s.Require().NotNil(release, "imageRelease did not run")
	return *release
}

// TestReleaseKnowsIntegrationTestPassed: imageRelease is told that the integration
// test of this record succeeded (for the IntegrationTestSuccess release policy).
func (s *RecordSuite) TestReleaseKnowsIntegrationTestPassed() {
	in := s.releaseInput(nil, model.StageImageBuild, model.StageIntegrationTest, model.StageImageRelease)
	s.True(in.IntegrationTestPassed)
}

// TestReleaseKnowsIntegrationTestFailed: a failed integration test that was allowed to
// fail does not count as passed.
func (s *RecordSuite) TestReleaseKnowsIntegrationTestFailed() {
	in := s.releaseInput(stepFailed("command exited with code 3"), model.StageImageBuild, model.StageIntegrationTest, model.StageImageRelease)
	s.False(in.IntegrationTestPassed)
	s.Equal(model.StatusSuccess, s.finished().status)
}

// TestReleaseWithoutIntegrationTest: a record that runs no integration test has not
// passed one.
func (s *RecordSuite) TestReleaseWithoutIntegrationTest() {
	in := s.releaseInput(nil, model.StageImageBuild, model.StageImageRelease)
	s.False(in.IntegrationTestPassed)
}
