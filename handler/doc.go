// Package handler owns what answers requests: the gateway middleware that
// strips client-forged trust headers and repairs SCRIPT_NAME/PATH_INFO, the
// built-in info page, static directories, and the supervised child app behind
// a reverse proxy. Wire protocols and process lifecycle are the caller's.
package handler
