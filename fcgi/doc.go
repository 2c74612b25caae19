// Package fcgi is a FastCGI application server for http.Handlers: it owns the
// record layer, request multiplexing, the Responder and Authorizer roles,
// limits, timeouts and graceful shutdown. Listening sockets, process
// management and configuration are left to its caller.
//
// Request bodies are demultiplexed into a bounded buffer per request
// (64 KiB): when a handler does not read its body and that buffer is full,
// reading the connection pauses until the handler reads, returns, or the
// request is cancelled. FastCGI has no flow control of its own, so this is
// the bound on how long one request can stall the others on its connection.
package fcgi
