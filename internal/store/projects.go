package store

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/cycloneci/cyclone/internal/model"
	"github.com/cycloneci/cyclone/internal/scm"
)

var projectFilterFields = map[string]string{
	"name": "name", "alias": "alias", "owner": "owner", "scm.type": "scm.type",
}

// Credentials are a project's secrets in plaintext, for the activities that need them.
type Credentials struct {
	SCMType          string
	SCMServer        string
	SCMUsername      string
	SCMPassword      string
	SCMToken         string
	RegistryUsername string
	RegistryPassword string
	// RegistryServer and RegistryRepository are empty when the project has no registry.
	RegistryServer     string
	RegistryRepository string
}

// SCM is the project's SCM configuration with its credentials.
func (c *Credentials) SCM() scm.Config {
	return scm.Config{Type: c.SCMType, Server: c.SCMServer, Credentials: scm.Credentials{
		Username: c.SCMUsername, Password: c.SCMPassword, Token: c.SCMToken,
	}}
}

// Secrets lists every non-empty secret, for masking.
func (c *Credentials) Secrets() []string {
	var out []string
	for _, s := range []string{c.SCMPassword, c.SCMToken, c.RegistryPassword} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// sealProject seals the plaintext secrets of p into its Sealed fields. An empty
// plaintext keeps what old had sealed for the same server: clients never see
// secrets, so an update that omits one means "unchanged".
func (s *Store) sealProject(p, old *model.Project) error {
	ad := "projects/" + p.ID + "/"
	if p.SCM != nil {
		var oldPass, oldTok []byte
		// Kept secrets stay with the server they were given for: a project moved
		// to another SCM must be given its credentials again.
		if old != nil && old.SCM != nil && old.SCM.Type == p.SCM.Type && old.SCM.Server == p.SCM.Server {
			oldPass, oldTok = old.SCM.SealedPassword, old.SCM.SealedToken
		}
		var err error
		if p.SCM.SealedPassword, err = s.seal(p.SCM.Password, ad+"scm.password", oldPass); err != nil {
			return err
		}
		if p.SCM.SealedToken, err = s.seal(p.SCM.Token, ad+"scm.token", oldTok); err != nil {
			return err
		}
	}
	if p.Registry != nil {
		var oldPass []byte
		if old != nil && old.Registry != nil && old.Registry.Server == p.Registry.Server {
			oldPass = old.Registry.SealedPassword
		}
		var err error
		if p.Registry.SealedPassword, err = s.seal(p.Registry.Password, ad+"registry.password", oldPass); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) seal(plain, ad string, keep []byte) ([]byte, error) {
	if plain == "" {
		return keep, nil
	}
	return s.box.Seal(plain, ad)
}

func (s *Store) open(sealed []byte, ad string) (string, error) {
	if len(sealed) == 0 {
		return "", nil
	}
	return s.box.Open(sealed, ad)
}

// CreateProject inserts p, assigning its ID and times. A taken name is ErrConflict.
func (s *Store) CreateProject(ctx context.Context, p *model.Project) error {
	p.ID = uuid.NewString()
	p.CreationTime = now()
	p.LastUpdateTime = p.CreationTime
	if err := s.sealProject(p, nil); err != nil {
		return err
	}
	if _, err := s.projects.InsertOne(ctx, p); err != nil {
		return writeErr(err)
	}
	s.noteProjectName(ctx, p)
	return nil
}

// GetProject returns the project with the given name.
func (s *Store) GetProject(ctx context.Context, name string) (*model.Project, error) {
	if s.scansQueries(ctx) {
		var hint projectName
		err := s.projectNames().FindOne(ctx, bson.D{{Key: "_id", Value: name}}).Decode(&hint)
		if err == nil {
			if p, err := s.GetProjectByID(ctx, hint.ProjectID); err == nil && p.Name == name {
				return p, nil
			}
		}
	}
	p, err := findOne[model.Project](ctx, s.projects, bson.D{{Key: "name", Value: name}})
	if err == nil {
		s.noteProjectName(ctx, p) // missing or stale: right from now on
	}
	return p, err
}

// projectName is a hint kept on the embedded FerretDB, which answers any query but
// a lone _id equality by reading the whole collection: a project's ID by its name,
// read by _id. A hint is checked against the project it names (a stale one, left by a
// rename or a deletion, or a missing one, falls back to the query by name and is
// written again), so it never has to be exact: it is written after the project, and
// a failure to write it costs only a slower lookup.
type projectName struct {
	Name      string `bson:"_id"`
	ProjectID string `bson:"projectID"`
}

func (s *Store) projectNames() *mongo.Collection { return s.db.Collection("projectNames") }

// noteProjectName writes the name hint of p (FerretDB only).
func (s *Store) noteProjectName(ctx context.Context, p *model.Project) {
	if !s.scansQueries(ctx) {
		return
	}
	_, _ = s.projectNames().ReplaceOne(ctx, bson.D{{Key: "_id", Value: p.Name}},
		projectName{Name: p.Name, ProjectID: p.ID}, options.Replace().SetUpsert(true))
}

// forgetProjectName drops the name hint of a project renamed or deleted (FerretDB
// only), if it still names that project.
func (s *Store) forgetProjectName(ctx context.Context, name, id string) {
	if !s.scansQueries(ctx) {
		return
	}
	_, _ = s.projectNames().DeleteOne(ctx, bson.D{{Key: "_id", Value: name}, {Key: "projectID", Value: id}})
}

// GetProjectByID returns the project with the given ID.
func (s *Store) GetProjectByID(ctx context.Context, id string) (*model.Project, error) {
	return findOne[model.Project](ctx, s.projects, bson.D{{Key: "_id", Value: id}})
}

// ListProjects lists projects by name.
func (s *Store) ListProjects(ctx context.Context, o ListOptions) ([]*model.Project, int64, error) {
	filter, err := buildFilter(bson.D{}, o.Filter, projectFilterFields)
	if err != nil {
		return nil, 0, err
	}
	return list[model.Project](ctx, s.projects, filter, bson.D{{Key: "name", Value: 1}}, o)
}

// UpdateProject replaces the project called name with p, keeping its ID, creation
// time and any secret p leaves empty. p may rename the project.
func (s *Store) UpdateProject(ctx context.Context, name string, p *model.Project) error {
	old, err := s.GetProject(ctx, name)
	if err != nil {
		return err
	}
	p.ID = old.ID
	p.CreationTime = old.CreationTime
	p.LastUpdateTime = now()
	if err := s.sealProject(p, old); err != nil {
		return err
	}
	res, err := s.projects.ReplaceOne(ctx, bson.D{{Key: "_id", Value: old.ID}}, p)
	if err != nil {
		return writeErr(err)
	}
	if res.MatchedCount == 0 {
		return ErrNotFound
	}
	if p.Name != old.Name {
		s.forgetProjectName(ctx, old.Name, old.ID)
		s.noteProjectName(ctx, p)
	}
	return nil
}

// DeleteProject deletes a project with its pipelines and records.
func (s *Store) DeleteProject(ctx context.Context, id string) error {
	if err := s.deleteLogs(ctx, "projectID", id); err != nil {
		return err
	}
	if _, err := s.records.DeleteMany(ctx, bson.D{{Key: "projectID", Value: id}}); err != nil {
		return err
	}
	s.awaitDerived(ctx) // an update in flight must not bring back what is dropped
	if err := errors.Join(s.dropProjectCounts(ctx, id), s.dropProjectRecent(ctx, id)); err != nil {
		return err
	}
	if _, err := s.pipelines.DeleteMany(ctx, bson.D{{Key: "projectID", Value: id}}); err != nil {
		return err
	}
	var gone model.Project
	err := s.projects.FindOneAndDelete(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&gone)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	s.forgetProjectName(ctx, gone.Name, id)
	return nil
}

// ProjectCredentials opens the project's sealed secrets.
func (s *Store) ProjectCredentials(ctx context.Context, projectID string) (*Credentials, error) {
	p, err := s.GetProjectByID(ctx, projectID)
	if err != nil {
		return nil, err
	}
	ad := "projects/" + p.ID + "/"
	c := &Credentials{}
	if p.SCM != nil {
		c.SCMType, c.SCMServer, c.SCMUsername = p.SCM.Type, p.SCM.Server, p.SCM.Username
		if c.SCMPassword, err = s.open(p.SCM.SealedPassword, ad+"scm.password"); err != nil {
			return nil, err
		}
		if c.SCMToken, err = s.open(p.SCM.SealedToken, ad+"scm.token"); err != nil {
			return nil, err
		}
	}
	if p.Registry != nil {
		c.RegistryUsername = p.Registry.Username
		c.RegistryServer, c.RegistryRepository = p.Registry.Server, p.Registry.Repository
		if c.RegistryPassword, err = s.open(p.Registry.SealedPassword, ad+"registry.password"); err != nil {
			return nil, err
		}
	}
	return c, nil
}
