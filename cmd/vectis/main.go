// Command vectis is the Vectis PeSIT E file-transfer server and client.
//
// This package is the composition root: it parses configuration and wires the
// packages together. It holds no protocol, storage or cluster logic.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vectis:", err)
		os.Exit(exitCode(err))
	}
}
