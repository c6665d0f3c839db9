// Package opstest holds the operations tests: the commands the README's "Operating
// with the temporal CLI" section shows, run with the real temporal CLI binary
// against a running Cyclone. It has no code of its own.
package opstest
