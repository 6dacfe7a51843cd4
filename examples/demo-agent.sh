#!/bin/sh
# A stand-in for a command-line coding agent, run by agent_runner.py for every stage of a
# pipeline (examples/agent-commands.yml). It does what each task type asks with what the runner
# gives every agent: TASK_* variables, its working directory, and TASK_RESULT_FILE for the text
# the stage completes with. DEMO_FLAG, DEMO_BLOCK and DEMO_INFO (from the commands file's `env`)
# choose the findings of the security audit; DEMO_AGENT_SECONDS how long each stage "works".
set -eu

echo "demo agent: ${TASK_TYPE} for build ${TASK_BUILD_NAME:-?} (task ${TASK_ID})"
sleep "${DEMO_AGENT_SECONDS:-0.3}"

finding() {  # a YAML list of one quoted item, or an empty list
    if [ -n "$1" ]; then printf '\n  - "%s"\n' "$1"; else printf ' []\n'; fi
}

case "$TASK_TYPE" in
security_audit)
    printf '# Security audit of %s\n\nReviewed by the demo agent.\n' "$TASK_BUILD_NAME" \
        > "$TASK_OUTPUT_DIR/report.md"
    {
        printf 'blocks:'; finding "${DEMO_BLOCK:-}"
        printf 'flags:'; finding "${DEMO_FLAG:-}"
        printf 'info:'; finding "${DEMO_INFO:-}"
    } > "$TASK_OUTPUT_DIR/triage-output.yml"
    echo "wrote report.md and triage-output.yml to $TASK_OUTPUT_DIR"
    echo audit-complete > "$TASK_RESULT_FILE"
    ;;
build_closeout)
    closeout="$PWD/closeout-$TASK_BUILD_NAME.md"
    printf '# %s closed\n' "$TASK_BUILD_NAME" > "$closeout"
    echo "$closeout" > "$TASK_RESULT_FILE"
    ;;
security_fix)
    echo "applying flags: ${TASK_FLAGS:-none}"
    echo flags-applied
    ;;
build_prefab) echo prefab-complete ;;
build_plan) echo build-complete ;;
*) echo "phase-complete" ;;
esac
