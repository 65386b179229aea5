// Package integration holds bgd's tests against real parts: the bgd binary
// built from this tree, demo-app slot processes, a real nginx and a real
// HAProxy on loopback ports. Tests that need nginx or HAProxy skip loudly when
// the binary is missing, and fail instead when CI is set.
package integration
