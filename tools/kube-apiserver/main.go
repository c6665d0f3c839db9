// Command kube-apiserver is the upstream Kubernetes API server, built from the Go
// module proxy for the tests of the Kubernetes executor (internal/executor/kubernetes),
// which run it against Debian's etcd. It is cmd/kube-apiserver/apiserver.go of
// k8s.io/kubernetes: that module's replace directives keep `go install` from
// building the command directly, so this module requires it and pins its staging
// modules itself (see go.mod). scripts/test-deps.sh builds it.
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
