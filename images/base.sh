#!/usr/bin/env bash
# Builds the Debian bookworm base image every bgd image starts FROM, from
# Debian's packages alone (there is no image registry to pull from):
#   mmdebstrap --variant=minbase ... | docker import - bgd/debian:bookworm
# About 20-90 s. Does nothing when the image is already there (FORCE=1 rebuilds).
# The mirror is the one apt uses on this machine (MIRROR overrides it).
set -euo pipefail
image=${BASE_IMAGE:-bgd/debian:bookworm}
if [ -z "${FORCE:-}" ] && docker image inspect "$image" >/dev/null 2>&1; then
	echo "base image $image: present"
	exit 0
fi
command -v mmdebstrap >/dev/null || { echo "images/base.sh: mmdebstrap is needed (apt-get install mmdebstrap)" >&2; exit 1; }

mirror=${MIRROR:-}
if [ -z "$mirror" ]; then
	# The first deb.debian.org-style URI apt is configured with (deb822 or one-line format).
	mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
		grep -oE 'https?://[^ ]+' | head -n1 || true)
	mirror=${mirror:-http://deb.debian.org/debian}
fi
mirror=${mirror%/}
security=${SECURITY_MIRROR:-${mirror%/debian}/debian-security}

echo "base image $image: building from $mirror"
mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm - \
	"deb $mirror bookworm main" \
	"deb $mirror bookworm-updates main" \
	"deb $security bookworm-security main" |
	docker import - "$image" >/dev/null
echo "base image $image: built"
