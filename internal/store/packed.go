package store

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"

	"go.mongodb.org/mongo-driver/bson"
)

// pack encodes v as BSON and compresses it, to be stored as one opaque value: the
// embedded FerretDB's cost of reading a document grows with its fields and bytes
// (about 0.1 ms a KiB), and a record's BSON shrinks to a third.
func pack(v any) ([]byte, error) {
	doc, err := bson.Marshal(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	fw.Reset(&buf)
	if _, err := fw.Write(doc); err != nil {
		return nil, err
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// unpack decodes what pack encoded into v.
func unpack(packed []byte, v any) error {
	doc, err := io.ReadAll(flate.NewReader(bytes.NewReader(packed)))
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	return bson.Unmarshal(doc, v)
}
