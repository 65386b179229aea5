// Package testsupport holds the fixtures bgd's integration tests and its
// benchmark (integration/bench) share: finding system programs, a real nginx
// and a real HAProxy on loopback ports, processes in their own group, HTTP
// load from Go clients and from wrk.
//
// Only tests and integration/bench import it; product code never does (its
// own test checks that).
package testsupport
