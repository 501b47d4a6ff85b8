// Command etcd is the etcd server, built from the module proxy at the version
// pinned in tools/go.mod. `go install go.etcd.io/etcd/server/v3` does not work
// because the server module carries replace directives; a main in our own
// module does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
