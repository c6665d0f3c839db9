package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/cycloneci/cyclone/internal/executor"
)

// LabelStep is the label carrying the step's name on a step's pod.
const LabelStep = "io.cyclone.step"

// maxNameLen is the length of a DNS-1123 label; pod names are kept within it so that
// they are valid host names too.
const maxNameLen = validation.DNS1123LabelMaxLength

// StepPodName is the name of the pod of a record's step: the same for every attempt
// of the step (so a leftover of a crashed attempt is found), a DNS-1123 label of at
// most 63 characters that ends with a hash of the record ID and step name (so
// different steps never share a name once shortened or lower-cased).
func StepPodName(recordID, stepName string) string {
	return dnsName("cyclone-"+recordID+"-"+stepName, recordID+"\x00"+stepName)
}

// WorkspaceClaimName is the name of the PersistentVolumeClaim holding a record's
// workspace.
func WorkspaceClaimName(recordID string) string {
	return dnsName("cyclone-ws-"+recordID, recordID)
}

// dnsName maps s to a DNS-1123 label: lower case, every run of other characters than
// [a-z0-9] made one '-', cut so that "-" and 8 hex digits of the hash of key fit in
// 63 characters. s must start with a letter or digit.
func dnsName(s, key string) string {
	sum := sha256.Sum256([]byte(key))
	suffix := hex.EncodeToString(sum[:4])
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	name := b.String()
	if n := maxNameLen - 1 - len(suffix); len(name) > n {
		name = name[:n]
	}
	return strings.TrimRight(name, "-") + "-" + suffix
}

// labelValue returns s when it is a valid label value, else a valid value derived
// from it: the characters outside [A-Za-z0-9_.-] made '-', cut, and a hash of s
// appended. The exact values travel in annotations (see metadata).
func labelValue(s string) string {
	if len(validation.IsValidLabelValue(s)) == 0 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	suffix := hex.EncodeToString(sum[:4])
	b := []byte(s)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '.' && c != '-' {
			b[i] = '-'
		}
	}
	v := string(b)
	if n := validation.LabelValueMaxLength - 1 - len(suffix); len(v) > n {
		v = v[:n]
	}
	v = strings.TrimFunc(v, func(r rune) bool { return r == '-' || r == '_' || r == '.' })
	if v == "" {
		return "x-" + suffix
	}
	return v + "-" + suffix
}

// metadata returns the labels and annotations of a record's objects: the labels of
// executor.Record.Labels with values made valid label values, and the exact values
// as annotations of the same keys (what List reports).
func metadata(rec executor.Record) (labels, annotations map[string]string) {
	annotations = rec.Labels()
	labels = make(map[string]string, len(annotations)+2)
	for k, v := range annotations {
		labels[k] = labelValue(v)
	}
	return labels, annotations
}

// recordSelector selects the objects of a record.
func recordSelector(recordID string) string {
	return executor.LabelManaged + "=true," + executor.LabelRecord + "=" + labelValue(recordID)
}
