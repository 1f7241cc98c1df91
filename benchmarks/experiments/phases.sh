# Two-jobs-at-a-time scheduling for the experiment scripts (sourced; needs $EXP and a PHASES array).
# A phase is one job or two; two run at once, each into $EXP/<job>.log, and the phase ends when both have.
# Jobs that share a phase share the machine the same way: the arms of a time-matched comparison go together.

pair() {
  echo "$(date +%T) start: $1 | $2"
  "$1" > "$EXP/$1.log" 2>&1 & local first=$!
  "$2" > "$EXP/$2.log" 2>&1 & local second=$!
  wait $first || echo "$(date +%T) FAILED: $1 (see $EXP/$1.log)"
  wait $second || echo "$(date +%T) FAILED: $2 (see $EXP/$2.log)"
  echo "$(date +%T) done: $1 | $2"
}

sequence() { for step in "$@"; do "$step" || return 1; done; }

run_phases() {  # $1: the first phase to run (default 1)
  local phase
  for phase in $(seq "${1:-1}" ${#PHASES[@]}); do
    read -r -a jobs <<< "${PHASES[$((phase - 1))]}"
    if [ ${#jobs[@]} = 2 ]; then
      pair "${jobs[@]}"
    else
      echo "$(date +%T) start: ${jobs[0]}"
      "${jobs[0]}" > "$EXP/${jobs[0]}.log" 2>&1 || echo "$(date +%T) FAILED: ${jobs[0]}"
      echo "$(date +%T) done: ${jobs[0]}"
    fi
  done
  echo "$(date +%T) all done"
}

# `script all [PHASE]` starts run_phases in the background; `script NAME` runs one job in the foreground.
main() {  # $1: script path, $@: its arguments
  local script=$1
  shift
  if [ "${1:-}" = all ]; then
    nohup setsid bash "$script" all_foreground "${2:-1}" >> "$EXP/all.log" 2>&1 &
    echo "started (pid $!): tail -f $EXP/all.log"
  elif [ "${1:-}" = all_foreground ]; then
    run_phases "${2:-1}"
  else
    "${1:?usage: $script all [FIRST_PHASE] | EXPERIMENT}" "${@:2}"
  fi
}
