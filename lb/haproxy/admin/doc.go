// Package admin is a small typed client for the HAProxy runtime API (the
// "stats socket" CLI), covering what bgd needs: show backend, show stat,
// get/set/add/del map, show map (the list of loaded maps) and get/set
// weight (a server's weight, which a canary's split changes). It exists
// because github.com/haproxytech/client-native is not available to this
// module.
//
// Protocol, as HAProxy 2.6 speaks it in non-interactive mode: the client
// writes one command line ending in "\n", HAProxy answers and closes the
// connection; every answer ends with a blank line. The client:
//
//   - opens one connection per command (a unix socket path, "unix://path"
//     or "tcp://host:port"), half-closes its side after writing (the master
//     CLI waits for it), and reads the answer to EOF;
//   - puts a deadline on every call (Client.Timeout, and the context's);
//   - treats any non-blank answer to set/add/del as an error carrying
//     HAProxy's text (*CommandError), and recognises the error texts that
//     can replace the data of a show/get;
//   - refuses arguments holding spaces, ';', '\' or control characters,
//     which would split or escape the command line (ErrBadArgument).
//
// A ';'-joined line is deliberately never sent: HAProxy runs its commands
// one by one and a failing one does not stop the next, so it buys no
// atomicity.
//
// The parsers (parseStat, parseGetMap, parseMapList, parseBackends,
// parseGetWeight) are fuzzed and tested on recorded answers:
// testdata/answers holds real HAProxy 2.6 answers, used as table-test
// inputs and as the fuzz seed corpus.
package admin
