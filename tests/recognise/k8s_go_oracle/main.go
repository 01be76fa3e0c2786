// The request-target oracle for tests/recognise/test_k8s_properties.py: each input line is
// a hex-encoded request target; each output line is what kube-apiserver's Go runtime makes
// of it: url.ParseRequestURI (an error is a 400), the path split as requestinfo.go's
// splitPath does (strings.Split(strings.Trim(path, "/"), "/")) and URL.Query(). Strings go
// out hex-encoded, so bytes that are not UTF-8 survive.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"os"
	"strings"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		raw, _ := hex.DecodeString(in.Text())
		u, err := url.ParseRequestURI(string(raw))
		if err != nil {
			out.Encode(map[string]any{"error": err.Error()})
			continue
		}
		parts := []string{}
		if p := strings.Trim(u.Path, "/"); p != "" {
			for _, s := range strings.Split(p, "/") {
				parts = append(parts, hex.EncodeToString([]byte(s)))
			}
		}
		query := map[string][]string{}
		for k, vs := range u.Query() {
			for _, v := range vs {
				query[hex.EncodeToString([]byte(k))] = append(query[hex.EncodeToString([]byte(k))], hex.EncodeToString([]byte(v)))
			}
		}
		out.Encode(map[string]any{"path": hex.EncodeToString([]byte(u.Path)), "parts": parts, "query": query})
	}
}
