// A plain Go client for the capture (tools/capture/capture_tools.py): what a
// tool written in Go sends with the standard library's defaults.
//
//	goclient https HOST:PORT   a crypto/tls handshake (ClientHello)
//	goclient http HOST:PORT    a net/http GET /
package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: goclient https|http HOST:PORT")
		os.Exit(2)
	}
	addr := os.Args[2]
	switch os.Args[1] {
	case "https":
		d := &net.Dialer{Timeout: 3 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
		if err == nil {
			c.Close()
		}
	case "http":
		cl := &http.Client{Timeout: 3 * time.Second}
		resp, err := cl.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
		}
	}
}
