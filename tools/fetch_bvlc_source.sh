#!/usr/bin/env bash
# Downloads BVLC Caffe at commit 99bd997 as Debian's source package (caffe
# 1.0.0+git20180821.99bd997, Debian 11 "bullseye" main) into DEST, without touching the
# system's apt configuration: a private deb-src list whose mirror is read from the machine's
# own apt sources. Prints the path of the orig tarball. The caller verifies its sha256.
# (--print-mirror: print the mirror chosen and stop; APT_ETC, default /etc/apt, for tests)
set -euo pipefail
DEST=${1:?usage: fetch_bvlc_source.sh DEST | --print-mirror}
VERSION=1.0.0+git20180821.99bd997
TARBALL=caffe_${VERSION%-*}.orig.tar.gz
APT_ETC=${APT_ETC:-/etc/apt}

# Debian's main archive as this machine's apt reaches it: a deb822 entry of debian.sources, or
# one signed by Debian's keyring (another vendor's .sources may sort first), then a one-line
# entry of sources.list (or a .list) naming a Debian archive; never the security archive.
debian_mirror() {
  local f
  for f in "$APT_ETC"/sources.list.d/debian.sources "$APT_ETC"/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v own="$([[ ${f##*/} == debian.sources ]] && echo 1 || echo 0)" '
      function take() {
        if (uri != "" && suites !~ /security/ && uri !~ /security/ &&
            (own || signed ~ /debian-archive-keyring/)) { print uri; done = 1; exit }
        uri = suites = signed = ""
      }
      /^[ \t]*$/ { take(); next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { suites = $0 }
      /^Signed-By:/ { signed = $0 }
      END { if (!done) take() }' "$f"
  done
  for f in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    awk '$1 == "deb" && $0 !~ /security/ && $0 ~ /debian/ {
           for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' "$f"
  done
}
mirror=$(debian_mirror | head -n 1)
if [[ $DEST == --print-mirror ]]; then echo "$mirror"; exit 0; fi
mkdir -p "$DEST"
if [[ -s "$DEST/$TARBALL" ]]; then echo "$DEST/$TARBALL"; exit 0; fi
if [[ -z $mirror ]]; then
  echo "fetch_bvlc_source: no Debian mirror in $APT_ETC/sources.list{,.d}; pass a local BVLC" \
       "source with -DCAFFE_SOURCE_TARBALL=... or -DCAFFE_SOURCE_DIR=... (see README)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
  echo "Types: deb-src"
  echo "URIs: $mirror"
  echo "Suites: bullseye"
  echo "Components: main"
  [[ -r $keyring ]] && echo "Signed-By: $keyring"
} > "$work/bvlc.sources"
apt_opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$work/bvlc.sources" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1)
# (a private cache too: without its locks, apt must not rewrite the system's package cache)
apt-get "${apt_opts[@]}" -qq update >&2
( cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only "caffe=${VERSION}-8" >&2 ) \
  || ( cd "$work" && apt-get "${apt_opts[@]}" -qq source --download-only caffe >&2 )
mv "$work/$TARBALL" "$DEST/$TARBALL.part"
mv "$DEST/$TARBALL.part" "$DEST/$TARBALL"
echo "$DEST/$TARBALL"
