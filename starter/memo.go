package starter

import (
	"fmt"
	"net/url"

	"github.com/cycloneci/cyclone/internal/model"
)

// recordMemo is the memo of a record's workflow, linking it back to the REST API for
// whoever finds the run in the Temporal UI or CLI: recordURL, the record itself, when
// its ID is known at the start (API and webhook starts). A cron's record ID is the
// workflow ID Temporal makes when the schedule fires, unknown when the schedule is
// written: recordID is "" and the memo's recordsURL is the pipeline's records, where
// the record is the one with the workflow's ID.
func recordMemo(project *model.Project, p *model.Pipeline, recordID string) map[string]any {
	records := fmt.Sprintf("/api/v1/projects/%s/pipelines/%s/records", url.PathEscape(project.Name), url.PathEscape(p.Name))
	if recordID == "" {
		return map[string]any{"recordsURL": records}
	}
	return map[string]any{"recordURL": records + "/" + url.PathEscape(recordID)}
}
