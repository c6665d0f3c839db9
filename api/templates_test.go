package api_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/testenv"
)

func TestConfigTemplates(t *testing.T) {
	env := testenv.Start(t, testenv.Options{NoWorker: true})
	r := env.Do("GET", "/api/v1/configtemplates", nil)
	wantStatus(t, r, http.StatusOK)
	var list struct {
		Metadata struct{ Total int64 }  `json:"metadata"`
		Items    []model.ConfigTemplate `json:"items"`
	}
	r.JSON(t, &list)
	if list.Metadata.Total != int64(len(list.Items)) {
		t.Fatalf("total %d for %d items", list.Metadata.Total, len(list.Items))
	}
	var types []string
	for _, tpl := range list.Items {
		if tpl.Name == "" || tpl.BuilderImage == "" || tpl.TestCommands == "" || tpl.PackageCommands == "" || tpl.CustomizedDockerfile == "" {
			t.Errorf("incomplete template %+v", tpl)
		}
		types = append(types, tpl.Type)
	}
	for _, want := range []string{"Go", "Maven", "Gradle", "NodeJS", "Python", "PHP"} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s template among %v", want, types)
		}
	}
}
