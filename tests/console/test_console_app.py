"""The console's WSGI app against a fake client (no browser, no services): sign-in,
roles, CSRF, escaping, idempotent choices, the retry queue when inference is down,
win rates, charts. The browser tests against the real platform are in test_browser.py.
"""

from __future__ import annotations

import io
import json
import re
import urllib.parse
from types import SimpleNamespace
from wsgiref.util import setup_testing_defaults

import grpc
import pytest

from rlhf.console import Backend, ConsoleApp, TokenStore
from rlhf.console.auth import SESSION_COOKIE, TokensFileError, parse_tokens
from rlhf.v1 import common_pb2, dataprep_pb2

LABELLER = "labeller-token-0123456789"
OPERATOR = "operator-token-0123456789"
XSS = '<script>alert(1)</script><img id="injected" src=x>'


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class FakeClient:
    """The calls of rlhf.client.Client the console makes, with a switchable outage."""

    timeout = 5.0

    def __init__(self, tmp_path) -> None:
        self.down = False
        self.feedback: list[dict] = []
        self.ledger: set[str] = set()
        self.promoted: list[str] = []
        self.models = [self._model("p-policy-v1", True, 1), self._model("p-policy-v2", False, 2)]
        self.runs = [
            common_pb2.RunStatus(
                run_id="run-1", stage="ppo", state=2, step=1, total_steps=4, metrics={"reward": 0.1}
            )
        ]
        split = tmp_path / "validation.jsonl"
        split.write_text('{"text": "the food was great", "label": "positive"}\n')
        self.dataset = dataprep_pb2.Dataset(name="reviews")
        self.dataset.splits["validation"].uri = f"file://{split}"

    @staticmethod
    def _model(version: str, promoted: bool, created: int) -> common_pb2.ModelVersion:
        m = common_pb2.ModelVersion(version=version, name="p-policy", kind=1, promoted=promoted)
        m.created_at.seconds = created
        m.gates["kl_within_budget"] = True
        m.gates["reward_up"] = not promoted
        m.lineage.metrics.update(
            {"kl_per_sequence": 1.5, "reward_before": 0.2, "reward_after": 0.1}
        )
        m.lineage.parent_version = "" if promoted else "p-policy-v1"
        window = m.lineage.feedback_windows.add(window_id="p-w1", feedback_ids=["x", "y"])
        window.counts["preference"] = 2
        return m

    def _check(self) -> None:
        if self.down:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

    def generate(self, prompts, model="", version="", **sampling):
        self._check()
        text = f"{prompts[0]} {XSS} #{sampling.get('seed')}"
        return SimpleNamespace(
            completions=[text], model_version=version, request_id=f"r-{sampling.get('seed')}"
        )

    def record_feedback(self, **fields):
        self._check()
        if fields["feedback_id"] not in self.ledger:
            self.ledger.add(fields["feedback_id"])
            self.feedback.append(fields)
        return SimpleNamespace(feedback_id=fields["feedback_id"], durable=True)

    def list_models(self, name="", promoted_only=False):
        return [m for m in self.models if not name or m.name == name]

    def promote_model(self, version, reason=""):
        self.promoted.append(version)
        return self.models[-1]

    def rollback_model(self, name, reason=""):
        return self.models[0]

    def list_runs(self, pipeline="", limit=0):
        return self.runs

    def get_run(self, run_id, service="trainer"):
        return self.runs[0]

    def stub(self, service):
        dataset = self.dataset
        return SimpleNamespace(GetDataset=lambda request, timeout: dataset)


class Browser:
    """Calls the WSGI app directly, keeping the session cookie like a browser."""

    def __init__(self, app: ConsoleApp) -> None:
        self.app = app
        self.cookie = ""

    def request(self, method: str, path: str, form: dict | None = None):
        path, _, query = path.partition("?")
        body = urllib.parse.urlencode(form or {}).encode()
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "HTTP_COOKIE": f"{SESSION_COOKIE}={self.cookie}" if self.cookie else "",
            "wsgi.input": io.BytesIO(body),
        }
        setup_testing_defaults(environ)
        started = {}

        def start_response(status, headers):
            started["status"], started["headers"] = int(status.split()[0]), headers

        text = b"".join(self.app(environ, start_response)).decode()
        headers = dict(started["headers"])
        for name, value in started["headers"]:
            if name == "Set-Cookie":
                self.cookie = value.split(";")[0].split("=", 1)[1]
        return started["status"], headers, text

    def csrf(self, path: str = "/compare") -> str:
        _, _, text = self.request("GET", path)
        return re.search(r'name="csrf" value="([^"]+)"', text).group(1)

    def sign_in(self, token: str) -> int:
        status, headers, _ = self.request(
            "POST", "/signin", {"csrf": self.csrf("/signin"), "token": token}
        )
        return status

    def post(self, path: str, **form) -> tuple[int, dict, str]:
        return self.request("POST", path, {"csrf": self.csrf(), **form})


@pytest.fixture
def setup(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(
        f"# token user role\n{LABELLER} alice labeller\n{OPERATOR} olga operator\n"
        "expired-token-0123456789 bob labeller 2000-01-01\n"
    )
    client = FakeClient(tmp_path)
    backend = Backend(client, pipeline="p", pool_dataset="reviews", retry_interval_s=0.05)
    app = ConsoleApp(backend, TokenStore(tokens))
    return SimpleNamespace(app=app, client=client, backend=backend, tokens=tokens)


def _compare(browser: Browser, prompt: str = "hello") -> str:
    status, headers, _ = browser.post("/compare/new", prompt=prompt, source="typed")
    assert status == 303, _
    return urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["c"][0]


def test_sign_in_roles_and_security_headers(setup):
    browser = Browser(setup.app)
    status, headers, _ = browser.request("GET", "/compare")
    assert status == 303 and headers["Location"] == "/signin"
    status, headers, text = browser.request("GET", "/signin")
    assert "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert browser.sign_in("wrong-token-0123456789") == 403
    assert browser.sign_in("expired-token-0123456789") == 403
    assert browser.request("GET", "/compare")[0] == 303
    # a sign-in form without the CSRF token is refused
    assert browser.request("POST", "/signin", {"token": LABELLER})[0] == 403
    before = browser.cookie
    assert browser.sign_in(LABELLER) == 303
    assert browser.cookie != before  # a fresh session id after sign-in
    status, _, text = browser.request("GET", "/compare")
    assert status == 200 and 'id="user">alice<' in text
    # removing the line from the tokens file signs alice out at once
    setup.tokens.write_text(f"{OPERATOR} olga operator\n")
    assert browser.request("GET", "/compare")[0] == 303


def test_cookie_flags(setup):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/signin", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    seen = {}
    setup.app(environ, lambda status, headers: seen.update(headers=headers))
    cookie = dict(seen["headers"])["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # probes and static files create no session
    status, headers, _ = Browser(setup.app).request("GET", "/healthz")
    assert status == 200 and "Set-Cookie" not in headers
    # signing out ends the session
    browser = Browser(setup.app)
    browser.sign_in(LABELLER)
    assert browser.request("GET", "/compare")[0] == 200
    status, headers, _ = browser.post("/signout")
    assert status == 303 and headers["Location"].startswith("/signin")
    assert browser.request("GET", "/compare")[0] == 303


def test_compare_records_one_preference_with_the_labeller(setup):
    browser = Browser(setup.app)
    browser.sign_in(LABELLER)
    cid = _compare(browser, prompt=XSS)
    status, _, text = browser.request("GET", f"/compare?c={cid}")
    assert status == 200
    assert "<script>" not in text and "&lt;script&gt;" in text and 'id="injected"' not in text
    assert "p-policy-v1" not in text and "p-policy-v2" not in text  # blind
    assert "win-rates" not in text  # labellers do not see the versions' score
    for _ in range(3):  # a double click and a resubmitted form
        status, headers, _ = browser.post("/compare/choose", c=cid, choice="a")
        assert status == 303
    assert len(setup.client.feedback) == 1
    event = setup.client.feedback[0]
    assert event["kind"] == "preference" and event["labeller"] == "alice"
    assert event["feedback_id"] == f"console-{cid}" and event["model_version"] == "p-policy-v1"
    assert event["chosen"] != event["rejected"] and event["prompt"] == XSS
    # a choice without the CSRF token is refused
    cid2 = _compare(browser)
    status, _, _ = browser.request("POST", "/compare/choose", {"c": cid2, "choice": "b"})
    assert status == 403 and len(setup.client.feedback) == 1
    # another labeller cannot answer alice's comparison
    other = Browser(setup.app)
    other.sign_in(OPERATOR)
    status, _, _ = other.post("/compare/choose", c=cid2, choice="b")
    assert status == 409 and len(setup.client.feedback) == 1


def test_a_comparison_never_shows_an_empty_or_twin_answer(setup):
    """A small model sometimes answers nothing, or twice the same: the console samples
    again, so the preference it records is one RecordFeedback accepts."""
    answers = iter(["", "   ", "the same", "the same", "the same", "different"])
    setup.client.generate = lambda prompts, **kw: SimpleNamespace(
        completions=[next(answers)], model_version=kw["version"], request_id="r"
    )
    comparison = setup.backend.new_comparison("alice", "hello")
    texts = sorted([comparison.a.text, comparison.b.text])
    assert texts == ["different", "the same"]


def test_tie_and_both_bad(setup):
    browser = Browser(setup.app)
    browser.sign_in(OPERATOR)
    browser.post("/compare/choose", c=_compare(browser), choice="tie")
    assert setup.client.feedback == []
    cid = _compare(browser)
    browser.post("/compare/choose", c=cid, choice="bad")
    assert [f["feedback_id"] for f in setup.client.feedback] == [
        f"console-{cid}-a",
        f"console-{cid}-b",
    ]
    assert all(f["kind"] == "thumbs" and f["thumbs_up"] is False for f in setup.client.feedback)
    _, _, text = browser.request("GET", "/compare")
    assert "Win rate per version pair" in text and "p-policy-v2" in text  # operators only


def test_inference_down_keeps_the_choice_and_sends_it_later(setup):
    browser = Browser(setup.app)
    browser.sign_in(LABELLER)
    cid = _compare(browser)
    setup.client.down = True
    status, headers, _ = browser.post("/compare/choose", c=cid, choice="b")
    assert status == 303
    _, _, text = browser.request("GET", headers["Location"])
    assert 'id="inference-down"' in text and 'data-status="queued"' in text
    assert setup.backend.pending_for("alice") == 1 and setup.client.feedback == []
    # a new comparison cannot be generated meanwhile: the page says so
    status, _, text = browser.post("/compare/new", prompt="x", source="typed")
    assert status == 503 and "unavailable" in text
    browser.post("/compare/choose", c=cid, choice="b")  # resubmitted while down: still one
    assert len(setup.backend.pending) == 1
    setup.client.down = False
    assert setup.backend.flush() == 0
    assert [f["feedback_id"] for f in setup.client.feedback] == [f"console-{cid}"]
    _, _, text = browser.request("GET", f"/compare?c={cid}")
    assert 'data-status="recorded"' in text and 'id="inference-down"' not in text


def test_operator_promotes_labeller_is_refused(setup):
    labeller = Browser(setup.app)
    labeller.sign_in(LABELLER)
    _, _, text = labeller.request("GET", "/versions")
    assert "promote-" not in text and "Roll back" not in text
    status, _, _ = labeller.post("/versions/promote", version="p-policy-v2")
    assert status == 403 and setup.client.promoted == []
    assert labeller.post("/versions/rollback", name="p-policy")[0] == 403
    operator = Browser(setup.app)
    operator.sign_in(OPERATOR)
    _, _, text = operator.request("GET", "/versions")
    assert 'id="promote-p-policy-v2"' in text
    assert "reward_up (reward_before=0.2, reward_after=0.1)" in text
    assert "p-w1" in text and "preference=2" in text
    status, headers, _ = operator.post("/versions/promote", version="p-policy-v2")
    assert status == 303 and setup.client.promoted == ["p-policy-v2"]


def test_rate_and_label(setup):
    browser = Browser(setup.app)
    browser.sign_in(LABELLER)
    status, headers, _ = browser.post("/rate/new", text=XSS)
    item = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["i"][0]
    _, _, text = browser.request("GET", headers["Location"])
    assert "&lt;script&gt;" in text and "<script>" not in text
    browser.post("/rate/submit", i=item, fb="thumbs:up")
    browser.post("/rate/submit", i=item, fb="rating", rating="2")
    browser.post("/rate/submit", i=item, fb="label", label="negative")
    browser.post("/rate/submit", i=item, fb="label", label="negative")  # once
    kinds = [(f["kind"], f["labeller"]) for f in setup.client.feedback]
    assert kinds == [("thumbs", "alice"), ("rating", "alice"), ("label", "alice")]
    assert setup.client.feedback[1]["rating"] == 2
    status, _, _ = browser.post("/rate/submit", i=item, fb="rating", rating="9")
    assert status == 400


def test_pool_runs_and_charts(setup):
    browser = Browser(setup.app)
    browser.sign_in(LABELLER)
    status, headers, _ = browser.post("/compare/new", source="pool")
    assert status == 303
    cid = urllib.parse.parse_qs(urllib.parse.urlsplit(headers["Location"]).query)["c"][0]
    assert setup.backend.comparison(cid, "alice").prompt == "the food was great"
    browser.request("GET", "/runs")
    run = setup.client.runs[0]
    run.step, run.metrics["reward"], run.metrics["kl"] = 2, 0.3, 0.5
    _, _, text = browser.request("GET", "/runs")
    assert text.count("<svg") >= 3 and "<polyline" in text
    assert len(setup.backend.run_history("run-1")) == 2
    assert browser.request("GET", "/runs/run-1")[0] == 200


def test_curves_come_from_the_runs_metrics_file(setup, tmp_path):
    """A finished run's full curve: metrics.jsonl beside the model it trained."""
    run_dir = tmp_path / "models" / "p" / "ppo" / "run-2"
    (run_dir / "run").mkdir(parents=True)
    rows = [{"step": i, "score": 0.1 * i, "kl_per_sequence": 0.5 * i} for i in range(1, 6)]
    (run_dir / "run" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    model = setup.client.models[1]
    model.lineage.run_id = "run-2"
    model.artifact.uri = f"file://{run_dir / 'model'}"
    setup.client.runs = [common_pb2.RunStatus(run_id="run-2", stage="ppo", state=3, step=5)]
    browser = Browser(setup.app)
    browser.sign_in(OPERATOR)
    _, _, text = browser.request("GET", "/runs")
    assert "Latest run with metrics: run-2" in text
    assert text.count("<polyline") == 2 and "score" in text and "kl_per_sequence" in text


def test_tokens_file_errors():
    with pytest.raises(TokensFileError, match="role"):
        parse_tokens("abcdefghijklmnopq alice admin\n")
    with pytest.raises(TokensFileError, match="16"):
        parse_tokens("short alice labeller\n")
    users = parse_tokens("abcdefghijklmnopq alice operator 2999-01-01T00:00:00\n")
    (user,) = users.values()
    assert user.is_operator and user.expires_at
