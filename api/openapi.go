package api

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPIDocument is the OpenAPI 3 document of the whole API. It is written by hand;
// TestOpenAPI keeps it true to the routes New registers.
//
//go:embed openapi.json
var openAPIDocument []byte

// getOpenAPI serves the OpenAPI document.
func getOpenAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDocument)
}
