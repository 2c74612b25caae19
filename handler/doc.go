// Package handler owns what answers requests: the gateway middleware that
// strips client-forged trust headers and repairs SCRIPT_NAME/PATH_INFO, the
// built-in info page, the ping and status pages, static directories, and the
// reverse proxy to the app (its own HTTP/1.1 client and connection pool).
//
// The app's life (starting it, the supervisor shared by every copy, the
// runtime directory, its locks and state) is package appctl's. The proxy
// asks an appctl.Client for the current ready instance (Ready, Await) and
// dials the address it names; it uses nothing of appctl beyond that small
// exported API. Wire protocols and this process's own lifecycle (listening,
// restarting, draining) are the caller's (package serve).
package handler
