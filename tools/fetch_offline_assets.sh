#!/usr/bin/env bash
# Vendor MathJax 3 and the Jupyter widgets HTML manager so the built book renders math and
# widgets with no CDN (recipe: shared/recipes/offline-book.md). They are third-party code,
# so they are fetched from the npm registry at build time, never committed.
#
# usage: tools/fetch_offline_assets.sh DEST     (make book uses DEST=book/_offline)
# Result: DEST/mathjax/ (MathJax es5 bundles), DEST/widgets/ (html-manager dist),
#         DEST/require.js, and DEST/.complete (the pinned versions) written last.
# Does nothing if DEST/.complete names the same versions; refetches when a pin changes.
set -euo pipefail

PACKAGES="mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.4"

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DEST" >&2
  exit 2
fi
dest=$1
if [[ -f "$dest/.complete" && "$(cat "$dest/.complete")" == "$PACKAGES" ]]; then
  touch "$dest/.complete"  # newer than this script, so make considers the target done
  echo "offline assets already in $dest"
  exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch the offline assets (Node 20)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shellcheck disable=SC2086  # word splitting of the package list is intended
(cd "$work" && npm pack --silent $PACKAGES >/dev/null)

stage=$work/stage
mkdir -p "$stage/mathjax" "$stage/widgets" "$work/unpack"
tar -xzf "$work"/mathjax-*.tgz -C "$work/unpack" package/es5 package/LICENSE
cp -R "$work/unpack/package/es5/." "$stage/mathjax/"
cp "$work/unpack/package/LICENSE" "$stage/mathjax/LICENSE"
rm -rf "$work/unpack" && mkdir "$work/unpack"

tar -xzf "$work"/jupyter-widgets-html-manager-*.tgz -C "$work/unpack" package/dist package/LICENSE
cp -R "$work/unpack/package/dist/." "$stage/widgets/"
cp "$work/unpack/package/LICENSE" "$stage/widgets/LICENSE"
rm -rf "$work/unpack" && mkdir "$work/unpack"

tar -xzf "$work"/requirejs-*.tgz -C "$work/unpack" package/require.js
cp "$work/unpack/package/require.js" "$stage/require.js"

# Sphinx would try to build any Markdown file under html_static_path's source tree.
find "$stage" -name '*.md' -delete

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$stage" "$dest"
echo "$PACKAGES" > "$dest/.complete"
echo "offline assets ready in $dest ($(du -sh "$dest" | cut -f1))"
