#!/bin/sh
# Makes the namespace and the engine's search attributes exist on the compose Temporal (the
# temporal-search-attributes service), before the worker and the service start: a workflow
# that sets an unregistered attribute fails its task. Creates only what is missing, so it is
# safe on every `up`. SEARCH_ATTRIBUTES lists NAME=Type pairs (workflows/names.py; a test
# checks the list against it).
set -eu

: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${SEARCH_ATTRIBUTES:?}"

# `retry COMMAND...`: the server may not answer yet, and a namespace just created reaches the
# server's namespace cache only after a few seconds (until then: "namespace not found").
retry() {
    attempt=0
    until "$@" >/dev/null 2>&1; do
        attempt=$((attempt + 1))
        if [ "$attempt" -ge 30 ]; then
            echo "still failing after 60 s: $*" >&2
            "$@"  # once more, its error shown
            return 1
        fi
        sleep 2
    done
}

retry temporal operator cluster health
if ! temporal operator namespace describe --namespace "$TEMPORAL_NAMESPACE" >/dev/null 2>&1; then
    temporal operator namespace create --namespace "$TEMPORAL_NAMESPACE" --retention 30d
fi

retry temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE"
existing=$(temporal operator search-attribute list --namespace "$TEMPORAL_NAMESPACE")
for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    if printf '%s\n' "$existing" | grep -qw "$name"; then
        echo "search attribute $name exists"
    else
        temporal operator search-attribute create --namespace "$TEMPORAL_NAMESPACE" \
            --name "$name" --type "$type"
    fi
done
