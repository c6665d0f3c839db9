package kubernetes

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// ErrInvalidResources is wrapped by the errors about a quota that cannot size a pod:
// a key other than "requests.<resource>" or "limits.<resource>", a value that is not a
// Kubernetes quantity, or a request above its limit. Retrying does not help.
var ErrInvalidResources = errors.New("invalid worker quota")

// ParseResources turns a worker quota ({"requests.cpu": "500m", "limits.memory":
// "2Gi", ...}) into a container's resource requirements. A nil or empty quota gives
// empty requirements.
func ParseResources(quota map[string]string) (corev1.ResourceRequirements, error) {
	var req corev1.ResourceRequirements
	for _, key := range slices.Sorted(maps.Keys(quota)) {
		kind, name, ok := strings.Cut(key, ".")
		if !ok || name == "" || (kind != "requests" && kind != "limits") {
			return corev1.ResourceRequirements{}, fmt.Errorf("%w: key %q is not requests.<resource> or limits.<resource> (e.g. requests.cpu, limits.memory)", ErrInvalidResources, key)
		}
		q, err := resource.ParseQuantity(strings.TrimSpace(quota[key]))
		if err != nil {
			return corev1.ResourceRequirements{}, fmt.Errorf("%w: %s: %q is not a Kubernetes quantity (e.g. 500m, 0.5, 2Gi, 1G): %w", ErrInvalidResources, key, quota[key], err)
		}
		if q.Sign() < 0 {
			return corev1.ResourceRequirements{}, fmt.Errorf("%w: %s: %q is negative", ErrInvalidResources, key, quota[key])
		}
		list := &req.Requests
		if kind == "limits" {
			list = &req.Limits
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[corev1.ResourceName(name)] = q
	}
	for _, name := range slices.Sorted(maps.Keys(req.Requests)) {
		r := req.Requests[name]
		if l, ok := req.Limits[name]; ok && r.Cmp(l) > 0 {
			return corev1.ResourceRequirements{}, fmt.Errorf("%w: requests.%s (%s) is above limits.%s (%s)", ErrInvalidResources, name, r.String(), name, l.String())
		}
	}
	return req, nil
}

// mergeQuota returns defaults overridden key by key by quota.
func mergeQuota(defaults, quota map[string]string) map[string]string {
	out := make(map[string]string, len(defaults)+len(quota))
	maps.Copy(out, defaults)
	maps.Copy(out, quota)
	return out
}
