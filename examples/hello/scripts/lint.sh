#!/bin/sh
# Style checks that need nothing installed: no tabs, no trailing spaces, lines <= 100 columns.
set -e
status=0
for f in $(find "$@" -name '*.py' | sort); do
    if grep -n "$(printf '\t')" "$f"; then echo "$f: tab character"; status=1; fi
    if grep -nE ' +$' "$f"; then echo "$f: trailing whitespace"; status=1; fi
    if awk 'length > 100 { print FILENAME ":" NR ": line longer than 100"; bad = 1 } END { exit bad }' "$f"; then :; else status=1; fi
    echo "checked $f"
done
exit $status
