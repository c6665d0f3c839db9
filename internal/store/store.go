// Package store keeps what users manage (projects, pipelines) and the projection of
// every run (pipeline records) in MongoDB, through the official mongo-driver.
//
// It uses only what MongoDB and the embedded FerretDB both support: CRUD, indexes,
// findAndModify and simple aggregation. Secrets are sealed with a secrets.Box before
// they are written, bound to the document ID and field.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
	"go.mongodb.org/mongo-driver/mongo/readpref"
	"go.mongodb.org/mongo-driver/x/mongo/driver/topology"

	"github.com/cycloneci/cyclone/internal/secrets"
)

var (
	// ErrNotFound means the addressed document does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique key (e.g. a name) is already taken.
	ErrConflict = errors.New("already exists")
)

// Store is the MongoDB-backed store.
type Store struct {
	client    *mongo.Client
	db        *mongo.Database
	box       *secrets.Box
	projects  *mongo.Collection
	pipelines *mongo.Collection
	records   *mongo.Collection
	logs      *mongo.Collection
	// scans says, once asked, whether the server is FerretDB (see scansQueries).
	scans onceBool
	// rotation is what record rotation remembers between passes (rotate.go).
	rotation rotationState
	// pending are the derived-data updates in flight (thenDerived); closing stops
	// their retries.
	pending pendingUpdates
	closing atomic.Bool
	// sheetIDs are the sheets of the pipelines met, sheetMemo the sheets read last
	// (sheets.go).
	sheetIDs  sheetIndex
	sheetMemo sheetMemo
}

// Open connects to MongoDB at uri, uses database dbName and makes sure the indexes
// exist. It returns when MongoDB answered a ping or ctx ends.
func Open(ctx context.Context, uri, dbName string, box *secrets.Box) (*Store, error) {
	opts := options.Client().ApplyURI(uri).
		SetRegistry(registry()).
		SetServerSelectionTimeout(5 * time.Second).
		SetConnectTimeout(5 * time.Second)
	client, err := mongo.Connect(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("connect to MongoDB: %w", err)
	}
	s := &Store{client: client, db: client.Database(dbName), box: box}
	s.projects = s.db.Collection("projects")
	s.pipelines = s.db.Collection("pipelines")
	s.records = s.db.Collection("records")
	s.logs = s.db.Collection("logs")
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	if err := s.ensureIndexes(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	if err := s.checkKey(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	return s, nil
}

// ErrWrongKey means the secret key is not the one the database's secrets were
// sealed with.
var ErrWrongKey = errors.New("the secret key is not the one this database's secrets were encrypted with")

// checkKey makes a wrong secret key fail at start, not at the first secret it cannot
// open (or, worse, after sealing new secrets with it): the first start seals a known
// value, every later one must open it.
func (s *Store) checkKey(ctx context.Context) error {
	const id, ad, plain = "secret-key-check", "meta/secret-key-check", "cyclone"
	meta := s.db.Collection("meta")
	var doc struct {
		Sealed []byte `bson:"sealed"`
	}
	err := meta.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		sealed, err := s.box.Seal(plain, ad)
		if err != nil {
			return err
		}
		_, err = meta.InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "sealed", Value: sealed}})
		if mongo.IsDuplicateKeyError(err) {
			return s.checkKey(ctx) // another process wrote it first
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("read the secret key check: %w", err)
	}
	if got, err := s.box.Open(doc.Sealed, ad); err != nil || got != plain {
		return ErrWrongKey
	}
	return nil
}

// Close disconnects from MongoDB once the derived-data updates in flight are done.
func (s *Store) Close(ctx context.Context) error {
	s.closing.Store(true)
	s.pending.wait(ctx, closeWait)
	return s.client.Disconnect(ctx)
}

// closeWait bounds how long Close waits for the derived-data updates in flight.
const closeWait = 10 * time.Second

// Ping checks that MongoDB answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("ping MongoDB: %w", err)
	}
	return nil
}

// collections are every collection the store uses. They are created at Open, before
// any is written, so whoever adds indexes after Open (the embedded FerretDB's _id
// lookups, devstack.IndexIDLookups) finds them all.
var collections = []string{
	"projects", "pipelines", "records", "logs", "logHeads", "meta", "migrations", "tokens", "clouds",
	"integrations", "slots", "counters", "recordCounts", "pipelineCards", "pipelineSheets", "pipelineDirectories",
	"projectNames", "rotatedRecords",
}

// ensureCollections creates the collections that do not exist yet.
func (s *Store) ensureCollections(ctx context.Context) error {
	existing, err := s.db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("list collections: %w", err)
	}
	for _, name := range collections {
		if slices.Contains(existing, name) {
			continue
		}
		err := s.db.CreateCollection(ctx, name)
		var cmdErr mongo.CommandError
		if errors.As(err, &cmdErr) && cmdErr.Code == 48 {
			continue // NamespaceExists: created meanwhile
		}
		if err != nil {
			return fmt.Errorf("create collection %s: %w", name, err)
		}
	}
	return nil
}

func (s *Store) ensureIndexes(ctx context.Context) error {
	if err := s.ensureCollections(ctx); err != nil {
		return err
	}
	unique := options.Index().SetUnique(true)
	specs := []struct {
		coll  *mongo.Collection
		model mongo.IndexModel
	}{
		{s.projects, mongo.IndexModel{Keys: bson.D{{Key: "name", Value: 1}}, Options: unique}},
		{s.pipelines, mongo.IndexModel{Keys: bson.D{{Key: "projectID", Value: 1}, {Key: "name", Value: 1}}, Options: unique}},
		{s.pipelines, mongo.IndexModel{Keys: bson.D{{Key: "svnRepoID", Value: 1}}}},
		{s.records, mongo.IndexModel{Keys: bson.D{{Key: "pipelineID", Value: 1}, {Key: "startTime", Value: -1}}}},
		{s.records, mongo.IndexModel{Keys: bson.D{{Key: "pipelineID", Value: 1}, {Key: "status", Value: 1}, {Key: "startTime", Value: -1}}}},
		{s.records, mongo.IndexModel{Keys: bson.D{{Key: "projectID", Value: 1}}}},
		{s.records, mongo.IndexModel{Keys: bson.D{{Key: "status", Value: 1}}}},
		{s.tokens(), mongo.IndexModel{Keys: bson.D{{Key: "id", Value: 1}}, Options: unique}},
		{s.clouds(), mongo.IndexModel{Keys: bson.D{{Key: "name", Value: 1}}, Options: unique}},
		{s.integrations(), mongo.IndexModel{Keys: bson.D{{Key: "name", Value: 1}}, Options: unique}},
	}
	for _, spec := range specs {
		if _, err := spec.coll.Indexes().CreateOne(ctx, spec.model); err != nil {
			return fmt.Errorf("create index on %s: %w", spec.coll.Name(), err)
		}
	}
	return errors.Join(s.ensureLogIndexes(ctx), s.ensureStatsIndexes(ctx), s.ensureSlotIndexes(ctx))
}

// ListOptions page and filter a list.
type ListOptions struct {
	Start  int64
	Limit  int64
	Filter map[string]string // exact matches; keys are checked against a whitelist
}

// FilterError names a filter key that is not allowed.
type FilterError struct{ Key string }

func (e *FilterError) Error() string { return fmt.Sprintf("cannot filter on %q", e.Key) }

// buildFilter turns the user's exact-match filter into a query, refusing keys outside
// the whitelist. Values are compared literally: never as a regex or operator.
func buildFilter(base bson.D, f map[string]string, allowed map[string]string) (bson.D, error) {
	for k, v := range f {
		field, ok := allowed[k]
		if !ok {
			return nil, &FilterError{Key: k}
		}
		base = append(base, bson.E{Key: field, Value: bson.D{{Key: "$eq", Value: v}}})
	}
	return base, nil
}

// list runs a paged, filtered find and decodes into a slice of T.
func list[T any](ctx context.Context, coll *mongo.Collection, filter bson.D, sort bson.D, o ListOptions) ([]*T, int64, error) {
	total, err := coll.CountDocuments(ctx, filter)
	if err != nil {
		return nil, 0, err
	}
	fo := options.Find().SetSort(sort).SetSkip(o.Start)
	if o.Limit > 0 {
		fo.SetLimit(o.Limit)
	}
	cur, err := coll.Find(ctx, filter, fo)
	if err != nil {
		return nil, 0, err
	}
	items := []*T{}
	if err := cur.All(ctx, &items); err != nil {
		return nil, 0, err
	}
	return items, total, nil
}

// findOne decodes one document or returns ErrNotFound.
func findOne[T any](ctx context.Context, coll *mongo.Collection, filter bson.D) (*T, error) {
	var v T
	err := coll.FindOne(ctx, filter).Decode(&v)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// findByIDs reads the documents with the given IDs, by ID (see eachByID).
func findByIDs[T any](ctx context.Context, s *Store, coll *mongo.Collection, ids []string) (map[string]*T, error) {
	out := make(map[string]*T, len(ids))
	var mu sync.Mutex
	err := eachByID(ctx, s, coll, ids, func(id string, v *T) error {
		mu.Lock()
		out[id] = v
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachByID reads the documents with the given IDs, by ID, and calls f with each one
// found, as it arrives: f may be called from several goroutines at once. MongoDB
// answers an $in on _id from its index; FerretDB answers only a lone _id equality
// without reading the whole collection, so there each is read on its own, a few at
// a time, and f runs in the lookup's goroutine (its own lookups overlap the others').
func eachByID[T any](ctx context.Context, s *Store, coll *mongo.Collection, ids []string, f func(id string, v *T) error) error {
	if len(ids) == 0 {
		return nil
	}
	if !s.scansQueries(ctx) {
		cur, err := coll.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return err
		}
		defer cur.Close(ctx)
		for cur.Next(ctx) {
			v := new(T)
			if err := cur.Decode(v); err != nil {
				return err
			}
			id, _ := cur.Current.Lookup("_id").StringValueOK()
			if err := f(id, v); err != nil {
				return err
			}
		}
		return cur.Err()
	}
	errs := make([]error, len(ids))
	sem := make(chan struct{}, lookupConcurrency)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			v, err := findOne[T](ctx, coll, bson.D{{Key: "_id", Value: id}})
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				errs[i] = err
			default:
				errs[i] = f(id, v)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// lookupConcurrency bounds the lookups by _id one read runs at once.
const lookupConcurrency = 8

// writeErr maps driver errors to the store's sentinel errors.
func writeErr(err error) error {
	// FerretDB reports a unique index violation on update as an internal error
	// carrying SQLite's message rather than as code 11000.
	if mongo.IsDuplicateKeyError(err) || (err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return err
}

// now is the store's clock, truncated to what BSON dates keep.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// IsUnavailable reports whether err means MongoDB could not be reached (as opposed
// to a bad query), so the caller can answer 503 and the client retry.
func IsUnavailable(err error) bool {
	var sel topology.ServerSelectionError
	return mongo.IsNetworkError(err) || mongo.IsTimeout(err) ||
		errors.As(err, &sel) || errors.Is(err, mongo.ErrClientDisconnected) ||
		errors.Is(err, topology.ErrServerSelectionTimeout)
}
