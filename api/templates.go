package api

import (
	"github.com/labstack/echo/v4"

	"github.com/cycloneci/cyclone/internal/templates"
)

func (h *handlers) listConfigTemplates(c echo.Context) error {
	items := templates.List()
	return renderList(c, items, int64(len(items)))
}
