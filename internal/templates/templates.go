// Package templates holds the built-in pipeline config templates (one per build
// tool: Go, Maven, Gradle, NodeJS, Python, PHP) that clients offer when a pipeline is
// created. They live in an embedded data file so they change without code.
package templates

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"github.com/cycloneci/cyclone/internal/model"
)

//go:embed templates.json
var data []byte

// builtIn is decoded once; a broken data file stops the program at start.
var builtIn = mustDecode(data)

func mustDecode(b []byte) []model.ConfigTemplate {
	var ts []model.ConfigTemplate
	if err := json.Unmarshal(b, &ts); err != nil {
		panic(fmt.Sprintf("templates: embedded templates.json: %v", err))
	}
	return ts
}

// List returns the built-in templates; callers may not modify them.
func List() []model.ConfigTemplate { return builtIn }
