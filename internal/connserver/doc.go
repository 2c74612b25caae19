// Package connserver is the half of a protocol server that does not depend
// on the protocol: the accept loop with back-off, connections tracked as
// idle or busy, graceful Shutdown and a Close that never waits for a
// handler, running a handler with panic recovery, the response header rules
// the CGI-style protocols share, and the lingering close after a response.
// The protocol packages (scgi, ajp) keep framing and the request/response
// mapping; their connection type embeds Conn and implements Handler.
// Standard library only, so protocol packages may import it.
package connserver
