package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// routeMethods are the methods the API's routes use.
var routeMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

// wrongMethodOrNotFound answers what no /api/v1 route takes, behind the group's
// guard (Echo routes it to the group's catch-all, not to its 405 handler): 405 with
// an Allow header when a route has the path under other methods, else 404.
func wrongMethodOrNotFound(e *echo.Echo, catchAll string) echo.HandlerFunc {
	return func(c echo.Context) error {
		path := echo.GetPath(c.Request())
		var allowed []string
		for _, m := range routeMethods {
			if m == c.Request().Method {
				continue
			}
			probe := e.NewContext(c.Request(), nil)
			e.Router().Find(m, path, probe)
			if p := probe.Path(); p != "" && p != catchAll && p != strings.TrimSuffix(catchAll, "/*") {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) == 0 {
			return echo.ErrNotFound
		}
		c.Response().Header().Set(echo.HeaderAllow, strings.Join(allowed, ", "))
		return echo.ErrMethodNotAllowed
	}
}
