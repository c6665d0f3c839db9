package model

import (
	"regexp"
	"strings"
)

var (
	// imagePathComponentRe is one path component of an image name (the registry
	// distribution grammar): lower-case letters and digits, with . _ __ or - between.
	imagePathComponentRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	// imageTagRe is an image tag.
	imageTagRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

// SplitImageName splits an image name of a build info or release policy into its
// path (team/web) and its tag ("" when it names none, e.g. web for web:v1).
func SplitImageName(name string) (path, tag string) {
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return name[:i], name[i+1:]
	}
	return name, ""
}

// ValidImageName reports whether name is a path of lower-case components separated
// by slashes, optionally with a tag: web, team/web, web:v1. A registry host is not
// part of it (the project's registry is).
func ValidImageName(name string) bool {
	path, tag := SplitImageName(name)
	if path == "" || (tag == "" && strings.HasSuffix(name, ":")) || (tag != "" && !ValidImageTag(tag)) {
		return false
	}
	for _, c := range strings.Split(path, "/") {
		if !imagePathComponentRe.MatchString(c) {
			return false
		}
	}
	return true
}

// ValidImageTag reports whether tag is a valid image tag.
func ValidImageTag(tag string) bool { return imageTagRe.MatchString(tag) }
