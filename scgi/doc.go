// Package scgi serves HTTP handlers over SCGI (python.ca/scgi/protocol.txt):
// one request per connection, a netstring header of CGI variables, then the
// body; the response is CGI-style and the connection closes after it.
// It owns framing, validation and the request/response mapping; listening,
// access control on the socket and routing are left to the caller.
package scgi
