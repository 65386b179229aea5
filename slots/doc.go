// Package slots runs a slot's process and checks its health.
//
// A slot is started from an argv (never a shell) in its own session, so it
// has its own process group and outlives the bgd command that started it;
// its stdout and stderr go to a log file. Stop sends SIGTERM to the group,
// waits up to a grace period, then sends SIGKILL. Health is an HTTP probe;
// WaitHealthy polls fast at first, then at the configured interval, and
// fails at once when the process exits, quoting the end of its log.
package slots
