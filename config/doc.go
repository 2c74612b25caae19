// Package config owns mysite.toml: its schema, strict decoding (unknown keys
// and wrong types are errors naming file, line and key), and defaults.
// It reads only the file it is given; flags and environment are the caller's.
package config
