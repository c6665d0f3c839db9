package webhook

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/cycloneci/cyclone/internal/model"
)

func asTypeErr(err error, target **json.UnmarshalTypeError) bool { return errors.As(err, target) }

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func orWord(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func isZeroSHA(s string) bool {
	return s != "" && strings.Trim(s, "0") == ""
}

// checkSHA accepts a full SHA-1 or SHA-256 commit ID in hex.
func checkSHA(field, s string) error {
	if len(s) != 40 && len(s) != 64 {
		return malformed(field, "%q is not a commit SHA", s)
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') && (r < 'A' || r > 'F') {
			return malformed(field, "%q is not a commit SHA", s)
		}
	}
	return nil
}

func checkRef(field, ref string) error {
	if err := model.ValidateRef(field, ref); err != nil {
		return malformed(field, "%q is not a valid git ref", ref)
	}
	return nil
}
