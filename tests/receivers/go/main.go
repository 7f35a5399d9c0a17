// The harness of the Go example of docs/receivers.md (package receiver, extracted from the page
// into receiver/verify.go): one verdict per delivery on stdin (kind, key, webhook-id,
// webhook-timestamp, webhook-signature, base64 body; tab-separated).
package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"strings"

	"receivers/receiver"
)

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for scanner.Scan() {
		fields := strings.Split(scanner.Text(), "\t")
		body, err := base64.StdEncoding.DecodeString(fields[5])
		if err != nil {
			panic(err)
		}
		header := http.Header{}
		header.Set("webhook-id", fields[2])
		header.Set("webhook-timestamp", fields[3])
		header.Set("webhook-signature", fields[4])
		verify := receiver.Genuine
		if fields[0] == "ed25519" {
			verify = receiver.GenuineEd25519
		}
		fmt.Fprintln(out, verify(fields[1], header, body))
	}
}
