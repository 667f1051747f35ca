import threading

from rlhf.pipelines import RetrainTrigger
from rlhf.v1 import events_pb2
from rlhf.workflows.feedback import FeedbackStore, feedback_dataset


def _event(i: int, kind=events_pb2.FEEDBACK_KIND_LABEL, confidence=0.9):
    return events_pb2.FeedbackRecorded(
        feedback_id=f"fb-{i}",
        pipeline="classify",
        model_version="clf-v1",
        kind=kind,
        prompt=f"text {i}",
        response="positive",
        label="negative" if i % 2 else "positive",
        thumbs_up=bool(i % 2),
        confidence=confidence,
    )


def test_duplicates_stored_once_and_exactly_one_request_per_window(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    trigger = RetrainTrigger(count=50, window_s=3600)
    fired = []
    for i in range(60):
        store.add(_event(i))
        if i % 3 == 0:
            assert not store.add(_event(i))  # redelivered duplicate
        decision = store.evaluate("classify", trigger, now=1000.0)
        if decision:
            fired.append(decision)
    assert store.count("classify") == 60
    assert len(fired) == 1 and fired[0].reason == "count"
    assert len(fired[0].feedback_ids) == 50
    # Same window: more feedback does not fire again; the next window does.
    for i in range(60, 120):
        store.add(_event(i))
    assert store.evaluate("classify", trigger, now=2000.0) is None
    later = store.evaluate("classify", trigger, now=1000.0 + 3600)
    assert later is not None and later.window_id != fired[0].window_id
    assert store.requests("classify") == [fired[0].window_id, later.window_id]


def test_concurrent_evaluations_fire_once(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    for i in range(50):
        store.add(_event(i))
    trigger = RetrainTrigger(count=50, window_s=60)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(store.evaluate("classify", trigger, 5.0)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1


def test_drift_in_confidence_triggers(tmp_path):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    trigger = RetrainTrigger(count=20, window_s=10, drift=0.2)
    for i in range(20):
        store.add(_event(i, confidence=0.95))
    assert store.evaluate("classify", trigger, now=0.0).reason == "count"
    for i in range(20, 30):
        store.add(_event(i, confidence=0.5))
    decision = store.evaluate("classify", trigger, now=15.0)
    assert decision is not None and decision.reason == "drift"


def test_feedback_becomes_versioned_dataset(tmp_path):
    events = [_event(i) for i in range(4)] + [
        _event(10, kind=events_pb2.FEEDBACK_KIND_THUMBS),
        events_pb2.FeedbackRecorded(
            feedback_id="p",
            kind=events_pb2.FEEDBACK_KIND_PREFERENCE,
            prompt="q",
            chosen="good",
            rejected="bad",
        ),
    ]
    summary = feedback_dataset(events, tmp_path, "round-1")
    labels = summary["splits"]["labels"]
    assert labels["splits"]["train"]["count"] == 5
    assert labels["version"].startswith("sha256:")
    assert summary["splits"]["preferences"]["splits"]["train"]["count"] == 1
    assert feedback_dataset([], tmp_path, "empty") is None
