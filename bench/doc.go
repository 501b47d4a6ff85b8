// Package bench holds cross-package benchmarks of the transfer path that
// no single package owns, such as the cost of tracing a PeSIT server. It has
// no code outside its tests.
package bench
