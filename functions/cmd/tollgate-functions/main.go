// Command tollgate-functions serves Tollgate's Cloud Run functions with
// functions-framework-go, for a container image and for local runs: the
// function named by FUNCTION_TARGET at "/" (deploy one image once per
// function, each with its own FUNCTION_TARGET), or, without it, every
// function at /{name}. It listens on $PORT (default 8080), on 127.0.0.1
// only if LOCAL_ONLY=true. functions/cloudrun documents the environment.
package main

import (
	"fmt"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	_ "github.com/tollgate-ci/tollgate/functions/cloudrun" // registers the functions
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host := ""
	if os.Getenv("LOCAL_ONLY") == "true" {
		host = "127.0.0.1"
	}
	if err := funcframework.StartHostPort(host, port); err != nil {
		fmt.Fprintln(os.Stderr, "tollgate-functions:", err)
		os.Exit(1)
	}
}
