//go:build race

package fcgi

const raceEnabled = true
