# The probe's shell script: run as `/bin/sh -c <this> sh ARGS...` in the candidate (see probe.SHELL_SCRIPT).
# $1 marker, $2 the Python program, $3 its request, $4 the deadline of each command (s), $5 the kill grace (s),
# $6 the byte cap of one section (+1: a longer section was cut), $7 the packages whose dpkg file lists to print
# (which files to look for; whether they exist the host sees for itself). Every command's output is captured
# whole (trailing newlines aside) and emitted with its byte length (LC_ALL=C: ${#v} counts bytes); its exit
# status goes straight to stdout (fd 3) as a record of its own, before it. No pattern is ever matched against
# a command's output: the shell's pattern operators are quadratic on a large one.
LC_ALL=C; export LC_ALL
M="$1"; CAP="$6"; GRACE="$5"; BUDGET="$8"
emit() { printf '%s%s %s\n%s' "$M" "$1" "${#2}" "$2"; }
T=""
if command -v timeout >/dev/null 2>&1 && timeout -k 1 5 true >/dev/null 2>&1; then T="timeout -k $5 $4"; fi
H="cat"
if command -v head >/dev/null 2>&1; then H="head -c $CAP"; elif ! command -v cat >/dev/null 2>&1; then H="read_all"; fi
read_all() { while IFS= read -r line; do printf '%s\n' "$line"; done; printf '%s' "$line"; }
exec 3>&1
S=""
if [ -n "$T" ] && command -v date >/dev/null 2>&1; then S=$(date +%s 2>/dev/null); fi
run() {
  name=$1; merge=$2; emit run "$3"; shift 3
  TT="$T"
  if [ -n "$S" ]; then
    left=$(( $BUDGET - ( $(date +%s) - S ) ))
    if [ "$left" -le 0 ]; then emit "${name}_rc" 124; emit "$name" ""; return; fi
    TT="timeout -k $GRACE $left"
  fi
  if [ "$merge" = 1 ]; then out=$( { $TT "$@" 2>&1 3>&-; rc=$?; emit "${name}_rc" "$rc" >&3; } </dev/null | $H )
  else out=$( { $TT "$@" 2>/dev/null 3>&-; rc=$?; emit "${name}_rc" "$rc" >&3; } </dev/null | $H ); fi
  emit "$name" "$out"
}
emit timeout "$T"
i=0
for p in $7; do
  for n in "$p" "$p:amd64"; do
    f="/var/lib/dpkg/info/$n.list"
    if [ -f "$f" ]; then emit "list_$i" "$($H <"$f" 2>/dev/null)"; break; fi
  done
  i=$((i+1))
done
emit user "$(id -u 2>/dev/null || echo '?')"
CONDA=""
if command -v conda >/dev/null 2>&1; then CONDA=$(command -v conda); else
  for c in CONDA_CANDIDATES; do if [ -x "$c" ]; then CONDA="$c"; break; fi; done
fi
emit conda_exe "$CONDA"
if [ -n "$CONDA" ]; then
  run conda_version 1 "$CONDA --version" "$CONDA" --version
  run conda_info 0 "$CONDA info --json" "$CONDA" info --json
fi
PY=""
for c in python3 python; do if command -v "$c" >/dev/null 2>&1; then PY=$(command -v "$c"); break; fi; done
emit python_exe "$PY"
if [ -n "$PY" ]; then run python 1 "$PY -c <probe>" "$PY" -c "$2" "$3"; fi
emit end ""
