// Package prefork is the process model of runfcgi method=prefork: a
// Supervisor that starts, steers, retires and replaces worker processes
// sharing the listening sockets, and the worker's side of it (Worker, a
// net.Listener that accepts only when the supervisor gives it the turn, and
// reports idle, busy and full back over a control socket).
//
// It is a package of its own because it is a whole concern — a process
// model with its own protocol between supervisor and worker — that the
// threaded serve loop never touches.
//
// Layering: prefork imports the standard library and listen (to hand the
// listeners' descriptors to workers). serve imports prefork; prefork imports
// neither serve nor daemon.
package prefork
