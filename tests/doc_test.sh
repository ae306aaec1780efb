#!/usr/bin/env bash
# The doc test (run by `make test`): every fenced ```sh block of README.md and
# docs/*.md runs as written, from the repository root, and must exit 0; and
# every `gelan CMD --flag` the reading path names must exist. The convention
# is documented in docs/README.md ("The doc test"):
#
#   ```sh       runs; ```text, ```console or no language: shown, never run
#   # doc-test: skip (REASON)   as a line of a block: the block is not run
#   # doc-test: sed EXPR        applied to the block's other lines before it
#                               runs (sed -E), e.g. to shrink a long training
#
# Blocks run in order, file by file (README.md, docs/README.md, docs/01-... in
# name order, then the other docs/*.md), each in a fresh `bash -euo pipefail`,
# so a page may use the files its earlier blocks wrote (always under runs/).
# With a build directory other than build/, `build/gelan` in a block means
# BUILD_DIR/gelan (likewise gelan-infer, test_runner and bench_*), and with
# GELAN_SHARED set, `../shared/` means $GELAN_SHARED/.
#
# usage: tests/doc_test.sh [BUILD_DIR] [FILE.md ...]
#   DOC_TEST_TIMEOUT   seconds one block may take (default 60)
#   DOC_TEST_BUDGET    seconds all blocks may take together (default 150)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
B=${1:-build}
[ $# -gt 0 ] && shift
B=${B%/}
TIMEOUT=${DOC_TEST_TIMEOUT:-60}
BUDGET=${DOC_TEST_BUDGET:-150}

if [ $# -gt 0 ]; then
    files=("$@")
else
    files=(README.md docs/README.md)
    for f in docs/[0-9]*.md; do [ -e "$f" ] && files+=("$f"); done
    for f in docs/*.md; do
        case " ${files[*]} " in *" $f "*) ;; *) files+=("$f") ;; esac
    done
fi
if [ ! -x "$B/gelan" ]; then
    echo "doc test: no $B/gelan (run make first)" >&2
    exit 1
fi

tmp=$(mktemp -d /tmp/gelan_doc_test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0

# ---- 1. what the reading path names exists ------------------------------------
# In code spans and fenced lines: every `gelan CMD` (or gelan-infer CMD) is a
# command of the program and each --flag after it is in `CMD --help`; every
# `test_runner SUITE ...` names existing suites; every `dir/file.c: name` link
# names a file that contains name. (Bash builtins where possible: this runs
# over every line of the pages.)
declare -A help_text
help_text[gelan]=$("$B/gelan" --help 2>&1)
[ -x "$B/gelan-infer" ] && help_text[gelan-infer]=$("$B/gelan-infer" --help 2>&1)
if [ $# -gt 0 ]; then
    lint_files=("$@")
else
    lint_files=(README.md docs/README.md)
    for f in docs/[0-9]*.md; do [ -e "$f" ] && lint_files+=("$f"); done
fi
lint_fail() {
    echo "doc test: $*"
    failed=$((failed + 1))
}
code_lines() { # the code spans of a page, and its fenced lines with `\` continuations joined
    grep -o '`[^`]*`' "$1" | tr -d '`'
    awk '/^[[:space:]]*```/ { inb = !inb; next }
         inb { line = line $0; if (line ~ /\\$/) { sub(/\\$/, " ", line); next } print line; line = "" }' "$1"
}
for f in "${lint_files[@]}"; do
    [ -e "$f" ] || continue
    while read -r prog cmd rest; do
        prog=${prog##*/}
        [ -n "${help_text[$prog]+x}" ] || continue
        if [[ $'\n'"${help_text[$prog]}" != *$'\n  '"$cmd "* ]]; then
            lint_fail "$f names '$prog $cmd', which is not a command of $prog"
            continue
        fi
        key="$prog $cmd"
        [ -n "${help_text[$key]+x}" ] || help_text[$key]=$("$B/$prog" "$cmd" --help 2>&1)
        for word in $rest; do
            [[ $word == --[a-z]* ]] || continue
            flag=${word%%[^a-z0-9-]*}
            [[ " ${help_text[$key]//$'\n'/ } " =~ [^a-z-]$flag([^a-z-]|$) ]] ||
                lint_fail "$f: '$prog $cmd' has no option $flag (in: $prog $cmd $rest)"
        done
    done < <(code_lines "$f" | grep -oE '(^|[ /])gelan(-infer)? +[a-z]+[^|;&#]*')
    while read -r _ suites; do
        for suite in $suites; do
            [ -e "tests/test_$suite.c" ] ||
                lint_fail "$f runs the test suite '$suite', which does not exist (no tests/test_$suite.c)"
        done
    done < <(code_lines "$f" | grep -oE 'test_runner( +[a-z][a-z0-9_]*)+')
    while read -r src name; do
        src=${src%:}
        if [ ! -e "$src" ]; then
            lint_fail "$f links to $src, which does not exist"
        elif ! grep -qw -- "$name" "$src"; then
            lint_fail "$f links to $src: $name, which is not in that file"
        fi
    done < <(grep -oE '`[a-z_]+/[a-z0-9_/]+\.[ch]: [A-Za-z_][A-Za-z0-9_]*`' "$f" | tr -d '`')
done

# ---- 2. every ```sh block runs ---------------------------------------------------
list_tree() { find . \( -path ./.git -o -path ./runs -o -path './build*' \) -prune -o -type f -print | sort; }
list_tree >"$tmp/before"

n=0
for f in "${files[@]}"; do
    [ -e "$f" ] || { echo "doc test: no file $f"; failed=$((failed + 1)); continue; }
    awk -v dir="$tmp" -v base="$n" -v file="$f" '
        /^[[:space:]]*```sh[[:space:]]*$/ { inb = 1; k++; ind = index($0, "`") - 1
                   out = sprintf("%s/block_%04d", dir, base + k); print file ":" NR > (out ".where"); next }
        inb && /^[[:space:]]*```[[:space:]]*$/ { inb = 0; close(out); next }
        inb { print substr($0, ind + 1) > out }
        END { print k + 0 > (dir "/count") }' "$f"
    n=$((n + $(cat "$tmp/count")))
done

ran=0 skipped=0 start=$SECONDS
for ((i = 1; i <= n; i++)); do
    blk=$(printf '%s/block_%04d' "$tmp" "$i")
    [ -e "$blk" ] || : >"$blk"
    where=$(cat "$blk.where")
    if grep -qE '^[[:space:]]*# doc-test: skip' "$blk"; then
        skipped=$((skipped + 1))
        echo "doc test: skip $where: $(grep -m1 -E '# doc-test: skip' "$blk" | sed -E 's/.*# doc-test: skip *//')"
        continue
    fi
    script=$(cat "$blk")
    while IFS= read -r expr; do
        script=$(sed -E -e "/^[[:space:]]*# doc-test:/!{$expr}" <<<"$script") || { echo "doc test: $where: bad sed expression: $expr"; failed=$((failed + 1)); continue 2; }
    done < <(sed -nE 's/^[[:space:]]*# doc-test: sed (.*)$/\1/p' "$blk")
    if [ -n "${GELAN_SHARED:-}" ]; then # the shared data elsewhere, as for the suites
        script=$(sed -E "s#(^|[^A-Za-z0-9_./-])\.\./shared/#\1${GELAN_SHARED%/}/#g" <<<"$script")
    fi
    if [ "$B" != build ]; then
        script=$(sed -E "s#(^|[^A-Za-z0-9_./-])build/(gelan|test_runner|bench_)#\\1$B/\\2#g" <<<"$script")
    fi
    t0=$SECONDS
    timeout "$TIMEOUT" bash -euo pipefail -c "$script" </dev/null >"$blk.log" 2>&1
    rc=$?
    ran=$((ran + 1))
    if [ $rc -ne 0 ]; then
        failed=$((failed + 1))
        [ $rc -eq 124 ] && why="took more than ${TIMEOUT}s" || why="exited with $rc"
        echo "doc test: FAILED $where ($why):"
        sed 's/^/    | /' <<<"$script"
        echo "    output (last 30 lines):"
        tail -n 30 "$blk.log" | sed 's/^/    > /'
    else
        echo "doc test: ok   $where ($((SECONDS - t0))s)"
    fi
done
total=$((SECONDS - start))

list_tree >"$tmp/after"
# New source files are someone editing the tree while the test runs, not output of a block.
new=$(comm -13 "$tmp/before" "$tmp/after" | grep -vE '\.(c|h|md|py|mjs|sh)$' || true)
if [ -n "$new" ]; then
    failed=$((failed + 1))
    echo "doc test: the blocks left files outside runs/ and build*/:"
    sed 's/^/    /' <<<"$new"
fi
if [ "$total" -gt "$BUDGET" ]; then
    failed=$((failed + 1))
    echo "doc test: the blocks took ${total}s, more than the budget of ${BUDGET}s (DOC_TEST_BUDGET)"
fi
echo "doc test: $ran blocks ran, $skipped skipped, $failed failures, ${total}s"
[ $failed -eq 0 ]
