#!/usr/bin/env bash
# Writes .dvc/plots/offline.html: a `dvc plots show/diff` template with vega, vega-lite and
# vega-embed inlined (from the npm registry), so the plots render with no network. Where npm
# cannot fetch them it writes a template that loads them from a CDN instead (DVC's default).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.dvc/plots/offline.html
[ -s "$out" ] && grep -q 'inlined' "$out" && exit 0
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
libs=(vega@5.33.0:vega.min.js vega-lite@5.23.0:vega-lite.min.js vega-embed@6.29.0:vega-embed.min.js)
if command -v npm >/dev/null && (cd "$tmp" && timeout 120 npm pack --silent "${libs[@]%%:*}" >/dev/null 2>&1); then
  {
    echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC plots</title><!-- inlined -->'
    for lib in "${libs[@]}"; do
      pkg=${lib%%:*}; file=${lib##*:}
      mkdir -p "$tmp/${pkg%@*}" && tar xzf "$tmp/${pkg/@/-}.tgz" -C "$tmp/${pkg%@*}"
      echo '<script>'; cat "$tmp/${pkg%@*}/package/build/$file"; echo '</script>'
    done
    echo '</head><body>{plot_divs}</body></html>'
  } > "$out.tmp"
else
  echo "npm could not fetch vega: $out loads it from a CDN" >&2
  {
    echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC plots</title>'
    for lib in vega@5 vega-lite@5 vega-embed@6; do
      echo "<script src=\"https://cdn.jsdelivr.net/npm/$lib\"></script>"
    done
    echo '</head><body>{plot_divs}</body></html>'
  } > "$out.tmp"
fi
mv "$out.tmp" "$out"
