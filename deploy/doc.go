// Package deploy holds what runs Cyclone in production: the Dockerfiles, the
// Kubernetes manifests and the Temporal dynamic config. Its tests build the image
// on the local Docker engine and check the manifests.
package deploy
