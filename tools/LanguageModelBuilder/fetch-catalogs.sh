#!/usr/bin/env bash
# Downloads the Debian 12 (bookworm) packages whose gettext catalogs train the bundled language-ID model and
# extracts them under $1 (default /tmp/langid-catalogs). Nothing is installed. Needs `apt-get update` once.
set -euo pipefail
root="${1:-/tmp/langid-catalogs}"
mkdir -p "$root/debs"
cd "$root/debs"
packages=(
  bash-builtins=5.2.15-2+b13
  coreutils=9.1-1
  diffutils=1:3.8-4
  evince-common=43.1-2+deb12u1
  findutils=4.9.0-4
  gedit=44.2-1
  gettext=0.21-12
  gimp-data=2.10.34-1+deb12u10
  gnupg-l10n=2.2.40-1.1+deb12u2
  grep=3.8-5
  libc-l10n=2.36-9+deb12u14
  libgtk-3-common=3.24.38-2~deb12u3
  nautilus-data=43.2-1
  sed=4.9-1+deb12u1
  tar=1.34+dfsg-1.2+deb12u1
  thunar=4.18.4-1
  util-linux-locales=2.38.1-5+deb12u3
  wget=1.21.3-1+deb12u1
  xfce4-panel=4.18.2-1
  xfce4-session=4.18.1-1
)
for p in "${packages[@]}"; do apt-get download "$p"; done
for d in *.deb; do dpkg-deb -x "$d" "$root/root"; done
echo "catalogs under $root/root/usr/share/locale"
