// Package compose tests the docker-compose topology at the repository's
// root (docker-compose.yml): three LB hosts, one per driver (nginx, HAProxy,
// builtin), each running its load balancer, bgd and the demo service's two
// slots, and a client container with wrk and curl that loads them over the
// compose network by service name. fleet_test.go tests the second
// topology, docker-compose.fleet.yml: one service shared by three LB hosts
// (nginx, HAProxy, builtin), each running `bgd agent`, with its state in an
// etcd container and its slots on an app host; a control network joins etcd,
// app and the LB hosts, a data network joins the LB hosts, the slots and the
// client, so that cutting an LB host off etcd leaves it serving.
//
// The tests are behind the build tag compose, so `go test ./...` never
// builds them; `make compose-test` (after `make images`) runs them:
//
//	TEST_TAGS=compose ./scripts/test.sh ./integration/compose/
//
// They bring the topology up once per run under a project name of their own
// (docker-compose -p), publish no port on the machine, and take it down with
// `down -v --remove-orphans` at the end; they touch no other container,
// network or image. Without docker or docker-compose they skip loudly, and
// fail in CI (CI set).
package compose
