package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/bson"

	"github.com/cycloneci/cyclone/internal/model"
)

var pipelineFilterFields = map[string]string{"name": "name", "alias": "alias", "owner": "owner"}

func codeSources(p *model.Pipeline) []model.CodeSource {
	if p == nil || p.Build == nil || p.Build.Stages == nil || p.Build.Stages.CodeCheckout == nil {
		return nil
	}
	return p.Build.Stages.CodeCheckout.CodeSources
}

// sealPipeline seals code source passwords and secret environment variables; an
// empty one keeps what old had at the same place (same source URL, same variable).
func (s *Store) sealPipeline(p, old *model.Pipeline) error {
	if err := s.sealEnvVars(p, old); err != nil {
		return err
	}
	if err := s.sealWebhookSecret(p, old); err != nil {
		return err
	}
	oldSources := codeSources(old)
	for i, src := range codeSources(p) {
		o := src.OtherCodeSource
		if o == nil {
			continue
		}
		var keep []byte
		if i < len(oldSources) && oldSources[i].OtherCodeSource != nil && oldSources[i].URL() == o.URL {
			keep = oldSources[i].OtherCodeSource.SealedPassword
		}
		sealed, err := s.seal(o.Password, codeSourceAD(p.ID, i), keep)
		if err != nil {
			return err
		}
		// The plaintext goes: p may travel on (a schedule's workflow input).
		o.SealedPassword, o.Password = sealed, ""
	}
	return nil
}

func (s *Store) sealEnvVars(p, old *model.Pipeline) error {
	kept := map[string][]byte{}
	if old != nil {
		for _, ref := range old.Build.EnvVarRefs() {
			kept[ref.Path] = ref.Var.SealedValue
		}
	}
	for _, ref := range p.Build.EnvVarRefs() {
		v := ref.Var
		if !v.Secret {
			v.SealedValue = nil
			continue
		}
		sealed, err := s.seal(v.Value, envVarAD(p.ID, ref.Path), kept[ref.Path])
		if err != nil {
			return err
		}
		v.SealedValue, v.Value = sealed, ""
	}
	return nil
}

func envVarAD(pipelineID, path string) string { return "pipelines/" + pipelineID + "/" + path }

// PipelineSecrets are a pipeline's secrets in plaintext, for the activities.
type PipelineSecrets struct {
	// Env holds secret environment variables by model.EnvVarRef.Path.
	Env map[string]string
	// CodeSourcePasswords holds code source passwords by the source's index.
	CodeSourcePasswords map[int]string
}

// PipelineSecrets opens a pipeline's sealed secrets.
func (s *Store) PipelineSecrets(ctx context.Context, pipelineID string) (*PipelineSecrets, error) {
	p, err := s.GetPipelineByID(ctx, pipelineID)
	if err != nil {
		return nil, err
	}
	out := &PipelineSecrets{Env: map[string]string{}, CodeSourcePasswords: map[int]string{}}
	for _, ref := range p.Build.EnvVarRefs() {
		if !ref.Var.Secret {
			continue
		}
		v, err := s.open(ref.Var.SealedValue, envVarAD(p.ID, ref.Path))
		if err != nil {
			return nil, err
		}
		out.Env[ref.Path] = v
	}
	for i, src := range codeSources(p) {
		if src.OtherCodeSource == nil {
			continue
		}
		pw, err := s.open(src.OtherCodeSource.SealedPassword, codeSourceAD(p.ID, i))
		if err != nil {
			return nil, err
		}
		if pw != "" {
			out.CodeSourcePasswords[i] = pw
		}
	}
	return out, nil
}

func codeSourceAD(pipelineID string, i int) string {
	return fmt.Sprintf("pipelines/%s/codeSources[%d].password", pipelineID, i)
}

// CreatePipeline inserts p into its project. A taken name is ErrConflict.
func (s *Store) CreatePipeline(ctx context.Context, p *model.Pipeline) error {
	p.ID = uuid.NewString()
	p.CreationTime = now()
	p.LastUpdateTime = p.CreationTime
	if err := s.sealPipeline(p, nil); err != nil {
		return err
	}
	if _, err := s.pipelines.InsertOne(ctx, p); err != nil {
		return writeErr(err)
	}
	// Listed first: the directory gives the pipeline its sheet.
	if err := s.listPipeline(ctx, p); err != nil {
		return err
	}
	return s.cardPipeline(ctx, p)
}

// GetPipeline returns the pipeline called name in a project. On a server that scans
// every query but a lone _id lookup (FerretDB) it finds the pipeline's ID in the
// project's directory first, and queries by name only when the directory does not
// lead to it.
func (s *Store) GetPipeline(ctx context.Context, projectID, name string) (*model.Pipeline, error) {
	if s.scansQueries(ctx) {
		if id, err := s.directoryLookup(ctx, projectID, name); err == nil && id != "" {
			if p, err := s.GetPipelineByID(ctx, id); err == nil && p.ProjectID == projectID && p.Name == name {
				return p, nil
			}
		}
	}
	return findOne[model.Pipeline](ctx, s.pipelines, bson.D{{Key: "projectID", Value: projectID}, {Key: "name", Value: name}})
}

// GetPipelineByID returns the pipeline with the given ID.
func (s *Store) GetPipelineByID(ctx context.Context, id string) (*model.Pipeline, error) {
	return findOne[model.Pipeline](ctx, s.pipelines, bson.D{{Key: "_id", Value: id}})
}

// ListPipelines lists a project's pipelines by name (see ListPipelinesRecent).
func (s *Store) ListPipelines(ctx context.Context, projectID string, o ListOptions) ([]*model.Pipeline, int64, error) {
	listed, total, err := s.ListPipelinesRecent(ctx, projectID, o, RecentCounts{})
	if err != nil {
		return nil, 0, err
	}
	pipelines := make([]*model.Pipeline, len(listed))
	for i, lp := range listed {
		pipelines[i] = lp.Pipeline
	}
	return pipelines, total, nil
}

// listPipelinesQuery lists a project's pipelines by name with a query.
func (s *Store) listPipelinesQuery(ctx context.Context, projectID string, o ListOptions) ([]*model.Pipeline, int64, error) {
	filter, err := buildFilter(bson.D{{Key: "projectID", Value: projectID}}, o.Filter, pipelineFilterFields)
	if err != nil {
		return nil, 0, err
	}
	return list[model.Pipeline](ctx, s.pipelines, filter, bson.D{{Key: "name", Value: 1}}, o)
}

// UpdatePipeline replaces the pipeline called name in a project with p.
func (s *Store) UpdatePipeline(ctx context.Context, projectID, name string, p *model.Pipeline) error {
	old, err := s.GetPipeline(ctx, projectID, name)
	if err != nil {
		return err
	}
	p.ID, p.ProjectID, p.CreationTime = old.ID, old.ProjectID, old.CreationTime
	p.LastUpdateTime = now()
	if err := s.sealPipeline(p, old); err != nil {
		return err
	}
	res, err := s.pipelines.ReplaceOne(ctx, bson.D{{Key: "_id", Value: old.ID}}, p)
	if err != nil {
		return writeErr(err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	if p.Name == old.Name {
		return s.cardPipeline(ctx, p)
	}
	return errors.Join(s.listPipeline(ctx, p), s.cardPipeline(ctx, p))
}

// DeletePipeline deletes a pipeline and its records.
func (s *Store) DeletePipeline(ctx context.Context, id string) error {
	p, err := s.GetPipelineByID(ctx, id)
	if err != nil {
		return err
	}
	if err := s.deleteLogs(ctx, "pipelineID", id); err != nil {
		return err
	}
	if _, err := s.records.DeleteMany(ctx, bson.D{{Key: "pipelineID", Value: id}}); err != nil {
		return err
	}
	s.awaitDerived(ctx) // an update in flight must not bring back what is dropped
	if err := errors.Join(s.dropPipelineCounts(ctx, id), s.dropPipelineRecent(ctx, p)); err != nil {
		return err
	}
	if err := s.unlistPipeline(ctx, p); err != nil {
		return err
	}
	res, err := s.pipelines.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return err
	}
	if res.DeletedCount == 0 {
		return ErrNotFound
	}
	return nil
}
