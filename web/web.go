// Package web holds the web UI's templates and static assets, embedded in
// the binary so `tollgate up` and the Cloud Run function serve them with no
// files beside them and no network: hand-written CSS and JavaScript, no
// framework, nothing fetched at run time. functions/ui renders them.
package web

import "embed"

// Templates are the html/template files: layout.html defines the page
// frame, each other file one page's "content".
//
//go:embed templates/*.html
var Templates embed.FS

// Static are the assets served under /static/.
//
//go:embed static
var Static embed.FS
