"""The one program that changes a device's release tree: a constant POSIX shell script.

It runs as `sh -c SCRIPT edge-release OP ROOT APP [ID [ARG]]`: the script never changes, and every
value arrives as a positional parameter (data, never code), quoted once for the device's shell by
`shlex.quote` where a transport needs a command string (ssh, adb) and passed as argv locally. The
same script runs on every transport (local, qemu, ssh, adb), so the tests that run it here run
what a board runs. It needs only POSIX sh, `find`, `sha256sum`, `tar` (for `receive`), `readlink`,
`head` and `mv -T` (GNU coreutils or toybox: Raspberry Pi OS, Debian, Ubuntu, Android).

Operations (`ID` is a release id, checked again here: letters, digits, '.', '_', '-', no leading dot):
  apps                  one `A <app>` line per folder under ROOT that has releases/ (APP is ignored)
  prepare ID            makes releases/.incoming-ID (after removing incoming folders idle for 60 min)
  receive ID            unpacks a tar from stdin into it, then prints every file's sha256
  hash ID [incoming]    sha256 of every file of releases/ID (or of its incoming folder)
  commit ID             writes release.json from stdin (unless pushed), renames the incoming folder
                        to releases/ID, then switches `current` to it
  switch ID             points `current` at releases/ID: a new link renamed over the old (atomic)
  abort ID              removes the incoming folder
  remove ID             removes releases/ID (never the current one)
  list                  `R <id> <release.json on one line>` per release, `I <name>` per incoming
                        folder, then `C <link target of current>`
Exit status 3 with one `edge-release: ...` line on stderr when an operation is refused or fails.
"""

from __future__ import annotations

STALE_INCOMING_MINUTES = 60
RECORD_LIMIT = 65536  # bytes of one release.json that `list` prints

SCRIPT = r"""
set -u
die() { echo "edge-release: $*" >&2; exit 3; }
name_ok() { case $1 in ''|.*|*[!A-Za-z0-9._-]*) return 1;; esac; return 0; }
op=$1; root=$2; app=$3; shift 3
[ "$root" = "~" ] && root=${HOME:?no HOME on the device}
case $root in /?*) ;; *) die "root $root is not an absolute folder";; esac
case /$root/ in */../*|*/./*) die "root $root has . or .. parts";; esac
[ "$op" = apps ] || name_ok "$app" || die "bad app name"
base=$root/$app; rel=$base/releases; id=${1:-}; new=
if [ -n "$id" ]; then name_ok "$id" || die "bad release id"; new=$rel/.incoming-$id; fi
need_id() { [ -n "$id" ] || die "$op needs a release id"; }
hashes() { (cd "$1" && find . -type f -exec sha256sum {} +) || die "cannot hash the files in $1"; }
switch_to() {
  [ -f "$rel/$1/release.json" ] || die "no verified release $1 in $rel"
  cur=$base/current
  if [ -e "$cur" ] || [ -L "$cur" ]; then [ -L "$cur" ] || die "$cur is not a symlink; refusing to replace it"; fi
  tmp=$base/.current-new.$$
  rm -f "$tmp"
  ln -s "releases/$1" "$tmp" || die "cannot create a link in $base"
  mv -T -f "$tmp" "$cur" || { rm -f "$tmp"; die "cannot switch $cur (needs mv -T: GNU coreutils or toybox)"; }
  echo "C releases/$1"
}
case $op in
apps)
  [ -d "$root" ] || exit 0
  for d in "$root"/*/releases; do [ -d "$d" ] && { a=${d%/releases}; echo "A ${a##*/}"; }; done; : ;;
prepare)
  need_id
  mkdir -p "$rel" || die "cannot create $rel"
  find "$rel" -mindepth 1 -maxdepth 1 -type d -name '.incoming-*' -mmin +__STALE__ -exec rm -rf {} + 2>/dev/null
  [ -e "$rel/$id" ] && die "release $id exists already"
  mkdir "$new" || die "cannot create $new"
  echo "P $new" ;;
receive)
  need_id; [ -d "$new" ] || die "no upload folder $new"
  (cd "$new" && tar -xf -) || die "unpacking the upload in $new failed"
  hashes "$new" ;;
hash)
  need_id; dir=$rel/$id; [ "${2:-}" = incoming ] && dir=$new
  [ -d "$dir" ] || die "no folder $dir"
  hashes "$dir" ;;
commit)
  need_id; [ -d "$new" ] || die "no upload folder $new"
  [ -e "$rel/$id" ] && die "release $id exists already"
  [ -f "$new/release.json" ] || cat > "$new/release.json" || die "cannot write $new/release.json"
  [ -s "$new/release.json" ] || die "empty release.json"
  mv "$new" "$rel/$id" || die "cannot rename $new to $rel/$id"
  switch_to "$id" ;;
switch)
  need_id; switch_to "$id" ;;
abort)
  need_id; [ -d "$new" ] && rm -rf "$new"; : ;;
remove)
  need_id
  [ "$(readlink "$base/current" 2>/dev/null)" = "releases/$id" ] && die "release $id is the current one"
  [ -d "$rel/$id" ] || die "no release $id in $rel"
  rm -rf "$rel/$id" || die "cannot remove $rel/$id"
  echo "D $id" ;;
list)
  for d in "$rel"/*; do
    [ -d "$d" ] || continue; i=${d##*/}; name_ok "$i" || continue
    printf 'R %s ' "$i"; head -c __LIMIT__ "$d/release.json" 2>/dev/null | tr -d '\n\r'; echo
  done
  for d in "$rel"/.incoming-*; do [ -d "$d" ] && echo "I ${d##*/}"; done
  echo "C $(readlink "$base/current" 2>/dev/null)" ;;
*) die "unknown operation $op" ;;
esac
""".replace("__STALE__", str(STALE_INCOMING_MINUTES)).replace("__LIMIT__", str(RECORD_LIMIT))

# `$0` of the script: names it in the device's process list and in its shell's error messages.
SCRIPT_NAME = "edge-release"


def script_argv(op: str, root: str, app: str, *args: str) -> list[str]:
    """The argv that runs one operation (values already validated by `names`)."""
    return ["sh", "-c", SCRIPT, SCRIPT_NAME, op, root, app, *args]


def parse_hashes(stdout: str) -> dict[str, str]:
    """`sha256sum` lines (`<hex>  ./path`, busybox/toybox alike) -> {relative path: hex}."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            path = parts[1].lstrip("*")
            found[path[2:] if path.startswith("./") else path] = parts[0].lower()
    return found
