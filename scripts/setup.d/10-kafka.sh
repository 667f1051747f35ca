#!/usr/bin/env bash
# Pre-fetch the Apache Kafka broker's jars (Maven Central) used by the `kafka` tests,
# bench/bus.py and `rlhf kafka start`. Needs Java 17+ and Maven; installs them from
# Debian when missing. Idempotent: a provisioned version is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/../.."

need_apt=()
if ! command -v java >/dev/null 2>&1; then need_apt+=(openjdk-17-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then need_apt+=(maven); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "10-kafka: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi

.venv/bin/rlhf kafka provision ${RLHF_KAFKA_VERSION:+--version "$RLHF_KAFKA_VERSION"}
