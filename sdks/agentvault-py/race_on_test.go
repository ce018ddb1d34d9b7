//go:build race

package pysdk

const raceEnabled = true
