//go:build !race

package fcgi

const raceEnabled = false
