// Package httpsyntax holds the small HTTP syntax rules every protocol
// package applies to what crosses it: tokens (methods, field names),
// Content-Length values, and values that would split a header. It imports
// the standard library only, so protocol packages may use it.
package httpsyntax
