// Command pause is the local node's sandbox ("pause") container: it holds a pod's namespaces
// open, exits 0 on SIGINT or SIGTERM, and reaps children it inherits as PID 1 (as the kubelet's
// own pause image does). Skjold's tests build it into the image the kubelet is told to use
// (--pod-infra-container-image), so no pull is needed.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		println("skjold pause")
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
