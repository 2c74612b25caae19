// Package scgi serves HTTP handlers over SCGI (python.ca/scgi/protocol.txt):
// one request per connection, a netstring header of CGI variables, then the
// body; the response is CGI-style and the connection closes after it.
// It owns framing, validation and the request/response mapping; the accept
// loop, connection tracking and shutdown come from internal/connserver;
// listening, access control on the socket and routing are left to the caller.
package scgi
