// Package searchattr names the Temporal search attributes Cyclone sets on every
// record workflow, so operators can filter runs in the Web UI and with
// `temporal workflow list --query 'CyclonePipeline="x"'`, and makes sure a namespace
// has them.
package searchattr

import (
	"context"
	"fmt"
	"slices"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
)

// The Keyword search attributes of a record workflow.
var (
	Project  = temporal.NewSearchAttributeKeyKeyword("CycloneProject")
	Pipeline = temporal.NewSearchAttributeKeyKeyword("CyclonePipeline")
	Record   = temporal.NewSearchAttributeKeyKeyword("CycloneRecord")
	Trigger  = temporal.NewSearchAttributeKeyKeyword("CycloneTrigger")
)

// All maps each attribute's name to its type, as namespaces register them.
var All = map[string]enumspb.IndexedValueType{
	Project.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	Pipeline.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	Record.GetName():   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	Trigger.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
}

// Ensure adds the attributes the namespace lacks. It fails when one exists with
// another type, or when the caller may not add them (an operator must then run
// `temporal operator search-attribute create`).
func Ensure(ctx context.Context, c client.Client, namespace string) error {
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list search attributes of %q: %w", namespace, err)
	}
	missing := map[string]enumspb.IndexedValueType{}
	for name, typ := range All {
		have, ok := resp.GetCustomAttributes()[name]
		switch {
		case !ok:
			missing[name] = typ
		case have != typ:
			return fmt.Errorf("search attribute %s in namespace %q has type %s, want %s", name, namespace, have, typ)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	names := make([]string, 0, len(missing))
	for name := range missing {
		names = append(names, name)
	}
	slices.Sort(names)
	_, err = c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        namespace,
		SearchAttributes: missing,
	})
	if err != nil {
		return fmt.Errorf("add search attributes %v to %q: %w", names, namespace, err)
	}
	return nil
}
