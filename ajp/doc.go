// Package ajp serves HTTP handlers over AJP13 (the Apache JServ Protocol as
// spoken by mod_proxy_ajp, mod_jk and lighttpd's mod_ajp13): forward
// requests in, headers and body chunks out, connections reused between
// requests. It owns framing, the Ghostcat-era checks (secret, attribute
// allow-list) and the request/response mapping; the accept loop, connection
// tracking and shutdown come from internal/connserver; listening, access
// control on the socket and routing are left to the caller.
package ajp
