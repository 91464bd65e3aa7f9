#!/usr/bin/env bash
# Downloads BVLC Caffe at commit 99bd997 as Debian's source package (caffe
# 1.0.0+git20180821.99bd997, Debian 11 "bullseye" main) into DEST, without touching the
# system's apt configuration: a private deb-src list whose mirror is read from the machine's
# own apt sources. Prints the path of the orig tarball. The caller verifies its sha256.
set -euo pipefail
DEST=${1:?usage: fetch_bvlc_source.sh DEST}
VERSION=1.0.0+git20180821.99bd997
TARBALL=caffe_${VERSION%-*}.orig.tar.gz
mkdir -p "$DEST"
if [[ -s "$DEST/$TARBALL" ]]; then echo "$DEST/$TARBALL"; exit 0; fi

mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -r $f ]] || continue
  mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
  # Prefer the main archive over the security one.
  [[ -n $mirror && $mirror != *security* ]] && break
done
if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
if [[ -z $mirror ]]; then
  echo "fetch_bvlc_source: no Debian mirror in /etc/apt/sources.list{,.d}; pass a local BVLC" \
       "source with -DCAFFE_SOURCE_TARBALL=... or -DCAFFE_SOURCE_DIR=... (see README)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
  echo "Types: deb-src"
  echo "URIs: $mirror"
  echo "Suites: bullseye"
  echo "Components: main"
  [[ -r $keyring ]] && echo "Signed-By: $keyring"
} > "$work/bvlc.sources"
apt_opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$work/bvlc.sources" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o Debug::NoLocking=1)
apt-get "${apt_opts[@]}" -qq update >&2
( cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only "caffe=${VERSION}-8" >&2 ) \
  || ( cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only caffe >&2 )
mv "$work/$TARBALL" "$DEST/$TARBALL.part"
mv "$DEST/$TARBALL.part" "$DEST/$TARBALL"
echo "$DEST/$TARBALL"
