#!/usr/bin/env bash
# Builds the systemd test-host image (Debian bookworm, minbase) with debootstrap and imports it
# into podman. The tag carries a hash of this recipe, so the image is rebuilt only when the
# recipe changes; an image with the current tag is reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$here/storage.conf}"

mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
recipe_hash="$(cat "$here/build-image.sh" | sha256sum | cut -c1-12)"
image="localhost/llm-serving-testhost:bookworm-$recipe_hash"

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

rootfs="$(mktemp -d /var/tmp/testhost-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,curl,ca-certificates,sudo,procps \
  bookworm "$rootfs" "$mirror" >&2

cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security_mirror bookworm-security main
SOURCES

# An empty machine-id makes systemd generate one per container.
: > "$rootfs/etc/machine-id"

# Units that make no sense in a container, or that would run apt/dpkg behind a test's back.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  fstrim.timer getty@tty1.service console-getty.service systemd-remount-fs.service \
  systemd-firstboot.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

# Without lists, and dated at the epoch, so that `apt: update_cache` + `cache_valid_time` in a
# role really updates instead of trusting a cache that does not exist.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
touch -d @0 "$rootfs/var/lib/apt/lists"

tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  - "$image" >&2

echo "$image"
