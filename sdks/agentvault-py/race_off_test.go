//go:build !race

package pysdk

const raceEnabled = false
