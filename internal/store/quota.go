package store

import (
	"fmt"
	"maps"
	"reflect"
	"slices"

	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/bson/bsoncodec"
	"go.mongodb.org/mongo-driver/bson/bsonrw"

	"github.com/cycloneci/cyclone/internal/model"
)

// quotaEntry is one stored resource of a model.Quota.
type quotaEntry struct {
	Name  string `bson:"name"`
	Value string `bson:"value"`
}

var quotaType = reflect.TypeOf(model.Quota{})

// registry is the driver's default BSON registry plus model.Quota as a list of
// name/value pairs: its keys ("limits.cpu") hold dots, which FerretDB refuses in
// field names (and MongoDB before 5.0 too).
func registry() *bsoncodec.Registry {
	r := bson.NewRegistry()
	r.RegisterTypeEncoder(quotaType, bsoncodec.ValueEncoderFunc(encodeQuota))
	r.RegisterTypeDecoder(quotaType, bsoncodec.ValueDecoderFunc(decodeQuota))
	return r
}

func encodeQuota(ec bsoncodec.EncodeContext, vw bsonrw.ValueWriter, v reflect.Value) error {
	if v.Type() != quotaType {
		return bsoncodec.ValueEncoderError{Name: "encodeQuota", Types: []reflect.Type{quotaType}, Received: v}
	}
	q := v.Interface().(model.Quota)
	if q == nil {
		return vw.WriteNull()
	}
	entries := make([]quotaEntry, 0, len(q))
	for _, name := range slices.Sorted(maps.Keys(q)) {
		entries = append(entries, quotaEntry{Name: name, Value: q[name]})
	}
	enc, err := ec.LookupEncoder(reflect.TypeOf(entries))
	if err != nil {
		return err
	}
	return enc.EncodeValue(ec, vw, reflect.ValueOf(entries))
}

// decodeQuota reads the list of pairs, or a document (a quota written to a MongoDB
// that took dotted field names).
func decodeQuota(dc bsoncodec.DecodeContext, vr bsonrw.ValueReader, v reflect.Value) error {
	if !v.CanSet() || v.Type() != quotaType {
		return bsoncodec.ValueDecoderError{Name: "decodeQuota", Types: []reflect.Type{quotaType}, Received: v}
	}
	switch vr.Type() {
	case bson.TypeNull:
		v.Set(reflect.Zero(quotaType))
		return vr.ReadNull()
	case bson.TypeArray:
		var entries []quotaEntry
		dec, err := dc.LookupDecoder(reflect.TypeOf(entries))
		if err != nil {
			return err
		}
		if err := dec.DecodeValue(dc, vr, reflect.ValueOf(&entries).Elem()); err != nil {
			return err
		}
		q := make(model.Quota, len(entries))
		for _, e := range entries {
			q[e.Name] = e.Value
		}
		v.Set(reflect.ValueOf(q))
		return nil
	case bson.TypeEmbeddedDocument:
		var m map[string]string
		dec, err := dc.LookupDecoder(reflect.TypeOf(m))
		if err != nil {
			return err
		}
		if err := dec.DecodeValue(dc, vr, reflect.ValueOf(&m).Elem()); err != nil {
			return err
		}
		v.Set(reflect.ValueOf(model.Quota(m)))
		return nil
	}
	return fmt.Errorf("a worker quota is stored as %s, want an array of name/value pairs", vr.Type())
}
