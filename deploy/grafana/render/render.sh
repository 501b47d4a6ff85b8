#!/bin/sh
# Renders docs/img/metrics-short-run.png: a node in process under a short
# scripted load, /metrics scraped every 200 ms (scrape.go), plotted with
# Debian's python3-matplotlib (plot.py). Run from anywhere in the repository.
set -eu
root=$(git rev-parse --show-toplevel)
csv=$(mktemp /tmp/vectis-metrics.XXXXXX.csv)
trap 'rm -f "$csv"' EXIT
cd "$root"
go run ./deploy/grafana/render/scrape.go >"$csv"
/usr/bin/python3 deploy/grafana/render/plot.py "$csv" docs/img/metrics-short-run.png
echo "wrote docs/img/metrics-short-run.png"
