#!/usr/bin/env bash
# Builds the three peers of the side-by-side benchmark (benchmarks/peers.py) from their public
# sources, at the exact commits of the released tags, with Go:
#   Burrow 1.9.5          github.com/linkedin/Burrow          v1.9.5  ced55ba90f6b833a45a124d411fd5eef63a70933
#   KMinion 2.3.5         github.com/redpanda-data/kminion    v2.3.5  4f3867a4400b731feda1f17f2e96dea36158d2ab
#   kafka_exporter 1.9.0  github.com/danielqsj/kafka_exporter v1.9.0  8ec24078707d4d3b349e71522ebd7f179746072d
#
# Sources: a git directory per project (bare or not). Give them with BURROW_GIT, KMINION_GIT,
# KAFKA_EXPORTER_GIT; otherwise a snapshot under /work/.mirror/<owner>+<name>/repo is used when
# present, else the repository is cloned (bare) from GitHub into .cache/peers/src-git/.
# The tag is checked against the commit above, exported with `git archive`, and built with
# GOFLAGS=-mod=mod (dependencies come from the Go module proxy; nothing is vendored here).
# Binaries: .cache/peers/bin/{burrow,kminion,kafka_exporter} (.cache is git-ignored).
#
#   benchmarks/peers/build.sh            # all three
#   GO=/usr/local/go/bin/go benchmarks/peers/build.sh burrow
set -euo pipefail

repo_root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$repo_root/.cache"
GO=${GO:-/usr/local/go/bin/go}
export GOPATH="$cache/go" GOCACHE="$cache/go/build-cache" GOMODCACHE="$cache/go/pkg/mod"
export GOFLAGS=-mod=mod CGO_ENABLED=0
bin_dir="$cache/peers/bin"
mkdir -p "$bin_dir" "$cache/peers/src" "$cache/peers/src-git"

# name  owner/repo  tag  commit  package to build (inside the source tree)
peers=(
  "burrow linkedin/Burrow v1.9.5 ced55ba90f6b833a45a124d411fd5eef63a70933 ."
  "kminion redpanda-data/kminion v2.3.5 4f3867a4400b731feda1f17f2e96dea36158d2ab ."
  "kafka_exporter danielqsj/kafka_exporter v1.9.0 8ec24078707d4d3b349e71522ebd7f179746072d ."
)

git_dir_for() {  # name owner/repo -> a git dir holding the repository
  local name=$1 slug=$2 var
  var=$(echo "${name}_GIT" | tr '[:lower:]' '[:upper:]')
  if [[ -n "${!var:-}" ]]; then echo "${!var}"; return; fi
  local mirror="/work/.mirror/${slug/\//+}/repo"
  if [[ -d "$mirror" ]]; then echo "$mirror"; return; fi
  local clone="$cache/peers/src-git/$name.git"
  if [[ ! -d "$clone" ]]; then
    git clone --quiet --bare "https://github.com/$slug" "$clone" >&2
  fi
  echo "$clone"
}

wanted=("$@")
for line in "${peers[@]}"; do
  read -r name slug tag commit package <<<"$line"
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " =~ " $name " ]]; then continue; fi
  git_dir=$(git_dir_for "$name" "$slug")
  found=$(git --git-dir="$git_dir" rev-parse --verify -q "$tag^{commit}" || true)
  if [[ "$found" != "$commit" ]]; then
    echo "build.sh: $slug $tag is '${found:-missing}' in $git_dir, expected $commit" >&2
    exit 1
  fi
  src="$cache/peers/src/$name-$tag"
  rm -rf "$src" && mkdir -p "$src"
  git --git-dir="$git_dir" archive "$commit" | tar -x -C "$src"
  echo "building $name $tag ($commit) in $src" >&2
  (cd "$src" && "$GO" build -trimpath -o "$bin_dir/$name" "$package")
  echo "$name $tag $commit $("$GO" version)" >"$bin_dir/$name.version"
done
ls -l "$bin_dir"
