# Sourced by the check scripts: `pip_quiet VENV ARGS...` runs `VENV/bin/python -m pip install --quiet ARGS`, hides
# only the local-index noise ("WARNING: Location ... is ignored"), and fails when pip fails (no `|| true`).
pip_quiet() {
  local venv=$1 log status=0
  shift
  log=$(mktemp)
  "$venv/bin/python" -m pip install --quiet "$@" >"$log" 2>&1 || status=$?
  grep -v "^WARNING: Location" "$log" || true  # grep finding nothing to print is not a failure
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    echo "FAIL: pip install $* (exit $status)" >&2
    return "$status"
  fi
}
