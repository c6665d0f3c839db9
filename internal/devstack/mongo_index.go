package devstack

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"

	_ "modernc.org/sqlite" // the driver FerretDB itself uses
)

// IndexIDLookups adds, to every collection of the embedded store's database dbName,
// an index FerretDB v1.24 needs but does not make: it looks documents up by
// `_ferretdb_sjson->'$._id'`, while its own _id index is on `_ferretdb_sjson->"_id"`,
// an expression SQLite does not match to the lookup, so every find, update or delete
// by _id scans the whole collection. Call it after the collections exist (after
// store.Open); it is idempotent. It only adds indexes: FerretDB's data and metadata
// are untouched, and dropping a collection drops its index with its table.
func (m *Mongo) IndexIDLookups(ctx context.Context, dbName string) error {
	uri := (&url.URL{Scheme: "file", Path: filepath.Join(m.dir, dbName+".sqlite"), OmitHost: true,
		RawQuery: url.Values{"_pragma": {"busy_timeout(10000)"}}.Encode()}).String()
	db, err := sql.Open("sqlite", uri)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\_ferretdb%' ESCAPE '\'`)
	if err != nil {
		return fmt.Errorf("list FerretDB tables: %w", err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, name)
	}
	rows.Close()
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, t+"_cyclone_id_lookup", t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("index _id lookups of %s: %w", t, err)
		}
	}
	return nil
}
