#!/usr/bin/env bash
# Code comments and docs cite only files that are in the repository: every
# relative Markdown link of a tracked .md file must resolve, and every
# upper-case document name (NAME.md) or seed-era directory (a top-level
# folder of the original tool's documents) named in a tracked source or doc
# file must exist.
# Exits 1 listing each dangling citation as file:line: name.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every list below comes from git: without a working checkout it would be
# empty and the check would pass on nothing.
git ls-files --error-unmatch README.md >/dev/null || { echo "check-refs: needs git and a git checkout" >&2; exit 1; }
fail=0
dangling() {
	echo "dangling citation: $1: $2" >&2
	fail=1
}

# 1. Markdown links [text](target), relative to the linking file.
while IFS=: read -r file line text; do
	while read -r target; do
		target=${target%%#*}
		[ -z "$target" ] && continue
		case $target in http://* | https://* | mailto:*) continue ;; esac
		[ -e "$(dirname "$file")/$target" ] || dangling "$file:$line" "$target"
	done < <(grep -oE '\]\([^) ]+\)' <<<"$text" | sed -E 's/^\]\((.*)\)$/\1/')
done < <(git grep -nE '\]\([^) ]+\)' -- '*.md')

# 2. Named documents and directories, wherever they are cited.
while IFS=: read -r file line name; do
	[ -n "$(git ls-files -- "$name" "*/$name")" ] || dangling "$file:$line" "$name"
done < <(git grep -noE '\b[A-Z][A-Z0-9_]*\.md\b' -- '*.go' '*.md' '*.sh' Makefile .ci/run ':!scripts/check-refs.sh')
while IFS=: read -r file line name; do
	name=${name//[^a-z]/}
	[ -d "$name" ] || dangling "$file:$line" "$name/"
done < <(git grep -noE '(^|[^A-Za-z0-9_./-])(shared|seed)/' -- '*.go' '*.md' '*.sh' Makefile .ci/run ':!scripts/check-refs.sh')

[ "$fail" = 0 ] && echo "references: every cited file is in the repository"
exit "$fail"
