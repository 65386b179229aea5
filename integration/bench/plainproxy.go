package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

// plainProxyArg makes this harness a plain net/http/httputil.ReverseProxy
// to one backend: the data-plane figure's "httputil" row, what Go's own
// reverse proxy costs, so that the builtin proxy's row shows what bgd adds
// to it. Its transport keeps as many idle connections per host as the
// builtin proxy's (256); everything else is Go's default.
const plainProxyArg = "plain-proxy"

func plainProxy(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: bench plain-proxy LISTEN BACKEND-URL")
		return 2
	}
	target, err := url.Parse(args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "plain-proxy:", err)
		return 2
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "plain-proxy:", err)
		return 1
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target); r.SetXForwarded() },
		Transport: &http.Transport{Proxy: nil, MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second},
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
	fmt.Fprintln(os.Stderr, "plain-proxy:", srv.Serve(ln))
	return 1
}
