package api

import (
	"net/http"
	"strconv"
	"time"
	_ "time/tzdata" // tz= must work on hosts and images without a zoneinfo database

	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/store"
)

// PipelineStatusStats is the spec's PipelineStatusStatsObject.
type PipelineStatusStats struct {
	Overview StatsOverview `json:"overview"`
	Details  []StatsDetail `json:"details"`
}

// StatsOverview sums the range. Total counts every record that started in it, also
// those still Pending or Running; SuccessRatio is Success/Total as "40.00%"
// (rounded half up; "0.00%" when there is no record).
type StatsOverview struct {
	Total int64 `json:"total"`
	StatsCounts
	SuccessRatio string `json:"successRatio"`
}

// StatsDetail is one local day; Timestamp is its 00:00 in Unix seconds.
type StatsDetail struct {
	Timestamp int64 `json:"timestamp"`
	StatsCounts
}

// StatsCounts are the finished records by status.
type StatsCounts struct {
	Success int64 `json:"success"`
	Failed  int64 `json:"failed"`
	Aborted int64 `json:"aborted"`
}

// maxUnixTime is 9999-12-31T23:59:59Z: a larger value is not Unix seconds (likely
// milliseconds).
const maxUnixTime = 253402300799

func (h *handlers) projectStats(c echo.Context) error {
	q, err := statsQuery(c)
	if err != nil {
		return err
	}
	proj, err := h.project(c)
	if err != nil {
		return err
	}
	q.ProjectID = proj.ID
	return h.renderStats(c, q)
}

func (h *handlers) pipelineStats(c echo.Context) error {
	q, err := statsQuery(c)
	if err != nil {
		return err
	}
	_, p, err := h.pipeline(c)
	if err != nil {
		return err
	}
	q.PipelineID = p.ID
	return h.renderStats(c, q)
}

// statsQuery reads startTime and endTime (Unix seconds, both inclusive, as the spec's
// 00:00:00 and 23:59:59) and tz (an IANA zone, default UTC).
func statsQuery(c echo.Context) (store.StatsQuery, error) {
	var q store.StatsQuery
	start, err := unixParam(c, "startTime")
	if err != nil {
		return q, err
	}
	end, err := unixParam(c, "endTime")
	if err != nil {
		return q, err
	}
	if end < start {
		return q, invalidField("endTime", "%d is before startTime %d", end, start)
	}
	q.Location = time.UTC
	if tz := c.QueryParam("tz"); tz != "" {
		// "Local" would be the server's zone, not one the client can name.
		loc, err := time.LoadLocation(tz)
		if err != nil || tz == "Local" {
			return q, invalidField("tz", "%q is not an IANA time zone such as Asia/Shanghai", tz)
		}
		q.Location = loc
	}
	q.From, q.To = time.Unix(start, 0), time.Unix(end+1, 0)
	if n := store.StatsDays(q.From, q.To, q.Location); n > store.MaxStatsDays {
		return q, invalidField("endTime", "the range covers %d days; at most %d are allowed", n, store.MaxStatsDays)
	}
	return q, nil
}

func unixParam(c echo.Context, name string) (int64, error) {
	s := c.QueryParam(name)
	if s == "" {
		return 0, invalidField(name, "is required (Unix seconds)")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > maxUnixTime {
		return 0, invalidField(name, "%q is not a time in Unix seconds", s)
	}
	return n, nil
}

func (h *handlers) renderStats(c echo.Context, q store.StatsQuery) error {
	days, err := h.store.RecordStats(c.Request().Context(), q)
	if err != nil {
		return err
	}
	resp := PipelineStatusStats{Details: make([]StatsDetail, 0, len(days))}
	for _, d := range days {
		counts := StatsCounts{Success: d.Success, Failed: d.Failed, Aborted: d.Aborted}
		resp.Details = append(resp.Details, StatsDetail{Timestamp: d.Start.Unix(), StatsCounts: counts})
		resp.Overview.Total += d.Total
		resp.Overview.Success += d.Success
		resp.Overview.Failed += d.Failed
		resp.Overview.Aborted += d.Aborted
	}
	resp.Overview.SuccessRatio = percent(resp.Overview.Success, resp.Overview.Total)
	return c.JSON(http.StatusOK, resp)
}

// percent formats part/whole with two decimals, rounded half up, in integers so no
// float rounding shows; 0 of 0 is "0.00%".
func percent(part, whole int64) string {
	if whole <= 0 {
		return "0.00%"
	}
	hundredths := (part*20000 + whole) / (2 * whole) // round(part*10000/whole)
	frac := strconv.FormatInt(hundredths%100, 10)
	if len(frac) == 1 {
		frac = "0" + frac
	}
	return strconv.FormatInt(hundredths/100, 10) + "." + frac + "%"
}
