// Command hello is the cold-start baseline: the smallest static Go HTTP
// server, answering 200 on every path. Exec to its first answer is what any
// Go binary pays before doing anything of its own.
package main

import (
	"net/http"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	_ = http.ListenAndServe("127.0.0.1:"+port, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	}))
}
