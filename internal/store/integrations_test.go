package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/store"
)

func sonarIntegration(name, address, token string) *model.Integration {
	return &model.Integration{Name: name, Type: model.IntegrationSonarQube,
		SonarQube: &model.SonarQubeServer{Address: address, Token: token}}
}

func TestIntegrations(t *testing.T) {
	st, uri := startStore(t)
	ctx := context.Background()
	in := sonarIntegration("sonar1", "https://sonar.example.com", "squ_very-secret-token")
	if err := st.CreateIntegration(ctx, in); err != nil {
		t.Fatal(err)
	}
	raw := bsonString(t, rawDoc(t, uri, "integrations", in.ID))
	if strings.Contains(raw, "squ_very-secret-token") || !strings.Contains(raw, "https://sonar.example.com") {
		t.Fatalf("integration document: %s", raw)
	}
	if err := st.CreateIntegration(ctx, sonarIntegration("sonar1", "https://other.example.com", "x")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second sonar1: got %v, want ErrConflict", err)
	}
	sec, err := st.IntegrationSecret(ctx, "sonar1")
	if err != nil || sec.Token != "squ_very-secret-token" || sec.Address != "https://sonar.example.com" || sec.Type != model.IntegrationSonarQube {
		t.Fatalf("secret %+v, %v", sec, err)
	}

	// An update without a token keeps it for the same address...
	same := sonarIntegration("ignored", "https://sonar.example.com", "")
	same.SonarQube.Description = "edited"
	if err := st.UpdateIntegration(ctx, "sonar1", same); err != nil {
		t.Fatal(err)
	}
	got, err := st.GetIntegration(ctx, "sonar1")
	if err != nil || got.SonarQube.Description != "edited" || got.Name != "sonar1" || !got.CreationTime.Equal(in.CreationTime) {
		t.Fatalf("after update: %+v, %v", got, err)
	}
	if sec, _ := st.IntegrationSecret(ctx, "sonar1"); sec.Token != "squ_very-secret-token" {
		t.Fatalf("token lost on an update to the same address: %+v", sec)
	}
	// ...but never follows it to another server.
	if err := st.UpdateIntegration(ctx, "sonar1", sonarIntegration("sonar1", "https://evil.example.com", "")); err != nil {
		t.Fatal(err)
	}
	if sec, _ := st.IntegrationSecret(ctx, "sonar1"); sec.Token != "" {
		t.Fatalf("token followed the integration to another server: %+v", sec)
	}

	items, total, err := st.ListIntegrations(ctx, store.ListOptions{})
	if err != nil || total != 1 || len(items) != 1 || items[0].Name != "sonar1" {
		t.Fatalf("list: %v %d %v", items, total, err)
	}
	if err := st.DeleteIntegration(ctx, "sonar1"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteIntegration(ctx, "sonar1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := st.IntegrationSecret(ctx, "sonar1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("secret of a deleted integration: %v", err)
	}
}
