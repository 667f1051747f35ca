"""The console in headless Chromium against the real platform: the five services on one
gRPC server (in-process bus, Triton serving) on the tiny e2e-zh pipeline.

One platform per module: after the first promotion the fixture registers a second
version of the policy (the same weights: a candidate) and deploys it as a 50% canary,
so Compare has two live versions. Screenshots of each page go to a directory under
the test's tmp (printed; RLHF_CONSOLE_SCREENSHOTS names another).

Needs `chromium` and `chromedriver` (scripts/setup.d/30-chromium.sh) and selenium.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from rlhf.services.inference.settings import InferenceSettings

import rlhf.pipelines
from rlhf.client import Client
from rlhf.console import Backend, ConsoleApp, ConsoleServer, TokenStore
from rlhf.console.auth import SESSION_COOKIE
from rlhf.demo import Observer, PlatformInProcess
from rlhf.registry import ModelRegistry
from rlhf.runtime.settings import load_settings
from rlhf.v1 import events_pb2
from rlhf.workflows.feedback import FeedbackStore

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [pytest.mark.triton, pytest.mark.timeout(900)]

PIPELINE = "e2e-zh"
MODEL = f"{PIPELINE}-policy"
LABELLER = "labeller-token-aaaaaaaaaaaaaaaa"
LABELLER_2 = "labeller-token-bbbbbbbbbbbbbbbb"
OPERATOR = "operator-token-cccccccccccccccc"
MARKUP = '<img id="injected" src="x"><script>document.title="pwned"</script>'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class Stack:
    """The platform, the console in front of it, and what the test watches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.observer = Observer()
        self.feedback: list[events_pb2.FeedbackRecorded] = []
        self.changed = threading.Condition()

    def on_feedback(self, event) -> None:
        with self.changed:
            self.feedback.append(event.payload)
            self.changed.notify_all()

    def wait_feedback(self, predicate, timeout: float = 30) -> list:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (found := [f for f in self.feedback if predicate(f)]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no matching feedback event on the bus")
                self.changed.wait(left)
        return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        message = "chromium/chromedriver not installed: run scripts/setup.d/30-chromium.sh"
        if os.environ.get("CI"):  # .ci/run installs them: missing there is a failure
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("console-platform")
    patch = pytest.MonkeyPatch()
    patch.setattr(rlhf.pipelines, "PIPELINES_DIR", Path(__file__).parents[1] / "services/e2e")
    settings = load_settings(
        InferenceSettings,
        artifact_dir=root,
        bus="inprocess",
        grpc={"host": "127.0.0.1", "port": 0},
    )
    s = Stack(root)
    platform = PlatformInProcess(settings)
    target = f"127.0.0.1:{platform.start(s.observer)}"
    s.target = target
    s.client = Client(dataprep=target, trainer=target, inference=target, timeout=120)
    servers: list[ConsoleServer] = []
    try:
        s.client.prepare(pipeline=PIPELINE)
        first = s.observer.wait_for(
            lambda: s.observer.policy_promotions(PIPELINE), 600, "the first promotion"
        )[0].model
        # A candidate: the same weights registered as a new version, served as a canary.
        s.registry = ModelRegistry(root / "registry")
        second = s.registry.register(
            MODEL,
            "policy",
            first.artifact.uri,
            pipeline=PIPELINE,
            parent_version=first.version,
            metrics=dict(first.lineage.metrics),
            gates=dict(first.gates),
        )
        canary = events_pb2.ModelPromoted(
            stage="promote", pipeline=PIPELINE, previous_version=first.version, canary_percent=50
        )
        canary.model.CopyFrom(second)
        platform.bus.publish("rlhf.model.promoted", canary, key=MODEL)
        deadline = time.monotonic() + 120
        while True:
            try:
                s.client.generate(["这家"], version=second.version, max_new_tokens=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        s.first, s.second = first.version, second.version
        platform.bus.subscribe("rlhf.feedback.recorded", "console-test", s.on_feedback)

        tokens = root / "console-tokens.txt"
        tokens.write_text(
            f"{LABELLER} alice labeller\n{LABELLER_2} bruno labeller\n{OPERATOR} olga operator\n"
        )
        backend = Backend(s.client, pipeline=PIPELINE, max_new_tokens=12, retry_interval_s=0.5)
        backend.start()
        s.backend = backend
        server = ConsoleServer(ConsoleApp(backend, TokenStore(tokens)), port=0).start()
        servers.append(server)
        s.url = server.url
        # The same console with inference unreachable (a closed port).
        down_client = Client(
            dataprep=target, trainer=target, inference=f"127.0.0.1:{_closed_port()}", timeout=5
        )
        down = ConsoleServer(
            ConsoleApp(Backend(down_client, pipeline=PIPELINE), TokenStore(tokens)), port=0
        )
        servers.append(down.start())
        s.down_url = down.url
        shots = os.environ.get("RLHF_CONSOLE_SCREENSHOTS")
        s.shots = Path(shots) if shots else tmp_path_factory.mktemp("console-screenshots")
        s.shots.mkdir(parents=True, exist_ok=True)
        print(f"console screenshots: {s.shots}")
        yield s
    finally:
        for server in servers:
            server.stop()
        if hasattr(s, "backend"):
            s.backend.stop()
        s.client.close()
        platform.stop()
        patch.undo()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def driver(stack):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.implicitly_wait(5)
    yield browser
    browser.quit()


def sign_in(driver, url: str, token: str) -> None:
    """Sign in and wait for the answer: a `driver.get` while the sign-in POST is in
    flight aborts it, and the browser never stores the session cookie (on a loaded
    machine the next page then lands on /signin)."""
    driver.delete_all_cookies()
    driver.get(f"{url}/signin")
    driver.find_element(By.ID, "token").send_keys(token)
    submit(driver, driver.find_element(By.CSS_SELECTOR, "#signin button"))


def submit(driver, button) -> None:
    """Click a form's button and wait until the next page has replaced this one."""
    page = driver.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(page))


def shot(stack, driver, name: str) -> None:
    driver.save_screenshot(str(stack.shots / f"{name}.png"))


def post_with_session(driver, url: str, path: str, **form) -> int:
    """Replay a form POST with the browser's session (a resubmitted form, or a crafted
    request for a page the person was not shown)."""
    cookie = driver.get_cookie(SESSION_COOKIE)["value"]
    csrf = driver.find_element(By.NAME, "csrf").get_attribute("value")
    data = urllib.parse.urlencode({"csrf": csrf, **form}).encode()
    request = urllib.request.Request(
        f"{url}{path}", data=data, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def new_comparison(driver, stack) -> str:
    """Draw prompts until the two responses differ; returns the comparison id."""
    for _ in range(6):
        driver.get(f"{stack.url}/compare")
        submit(driver, driver.find_element(By.ID, "compare-pool"))
        if driver.find_element(By.ID, "choose-a").is_enabled():
            return re.search(r"[?&]c=([^&]+)", driver.current_url).group(1)
    raise AssertionError("six draws gave identical responses")


def test_wrong_token_lands_on_sign_in(stack, driver):
    driver.get(f"{stack.url}/compare")
    assert driver.current_url.endswith("/signin")
    sign_in(driver, stack.url, "not-a-token-at-all-xxxxxxxx")
    assert driver.current_url.endswith("/signin")
    assert "Unknown or expired token" in driver.find_element(By.ID, "error").text
    shot(stack, driver, "signin")
    # nothing reaches the platform without a session
    before = len(stack.feedback)
    status = post_with_session(driver, stack.url, "/compare/choose", c="x", choice="a")
    assert status == 303 and len(stack.feedback) == before


def test_labeller_compares_and_the_preference_reaches_the_bus(stack, driver):
    sign_in(driver, stack.url, LABELLER)
    assert driver.find_element(By.ID, "user").text == "alice"
    cid = new_comparison(driver, stack)
    page = driver.page_source
    assert stack.first not in page and stack.second not in page  # blind A / B
    a_text = driver.find_element(By.ID, "response-a").text
    shot(stack, driver, "compare")
    driver.find_element(By.ID, "comment").send_keys("A reads better")
    ActionChains(driver).double_click(driver.find_element(By.ID, "choose-a")).perform()
    outcome = driver.find_element(By.ID, "outcome")
    assert outcome.get_attribute("data-status") == "recorded"
    shot(stack, driver, "compare-recorded")

    (event,) = stack.wait_feedback(lambda f: f.feedback_id == f"console-{cid}")
    assert event.kind == events_pb2.FEEDBACK_KIND_PREFERENCE
    assert event.labeller == "alice" and event.pipeline == PIPELINE
    assert event.chosen.strip() == a_text.strip() and event.model_version == stack.first
    # A resubmitted form records nothing more.
    driver.get(f"{stack.url}/compare")
    assert post_with_session(driver, stack.url, "/compare/choose", c=cid, choice="b") == 303
    time.sleep(1.0)
    assert [f.feedback_id for f in stack.feedback].count(f"console-{cid}") == 1
    # Counted in the next retraining window: pending in data prep's feedback store.
    store = FeedbackStore(stack.root / "state" / "dataprep" / "feedback.sqlite")
    deadline = time.monotonic() + 30
    while not any(f.feedback_id == f"console-{cid}" for f in store.pending(PIPELINE)):
        assert time.monotonic() < deadline, "the preference never reached data prep"
        time.sleep(0.5)
    pending = [f for f in store.pending(PIPELINE) if f.feedback_id == f"console-{cid}"]
    assert len(pending) == 1 and pending[0].labeller == "alice"
    stack.compared = f"console-{cid}"


def test_markup_in_text_is_shown_as_text(stack, driver):
    sign_in(driver, stack.url, LABELLER_2)
    driver.get(f"{stack.url}/rate")
    driver.find_element(By.ID, "rate-input").send_keys(MARKUP)
    submit(driver, driver.find_element(By.ID, "rate-new"))
    assert driver.find_element(By.ID, "rate-text").text == MARKUP
    assert driver.find_elements(By.ID, "injected") == []
    assert driver.title != "pwned"
    shot(stack, driver, "rate")
    submit(driver, driver.find_element(By.ID, "thumbs-down"))
    assert "recorded" in driver.find_element(By.ID, "message").text
    (event,) = stack.wait_feedback(
        lambda f: f.labeller == "bruno" and f.kind == events_pb2.FEEDBACK_KIND_THUMBS
    )
    assert event.response == MARKUP and not event.thumbs_up


def test_labellers_cannot_promote(stack, driver):
    sign_in(driver, stack.url, LABELLER)
    driver.get(f"{stack.url}/versions")
    assert driver.find_elements(By.ID, f"promote-{stack.second}") == []
    promotions = len(stack.observer.promoted)
    status = post_with_session(driver, stack.url, "/versions/promote", version=stack.second)
    assert status == 403
    status = post_with_session(driver, stack.url, "/versions/rollback", name=MODEL)
    assert status == 403
    time.sleep(1.0)
    assert len(stack.observer.promoted) == promotions
    assert stack.registry.promoted(MODEL).version == stack.first


def test_operator_promotes_a_version(stack, driver):
    sign_in(driver, stack.url, OPERATOR)
    driver.get(f"{stack.url}/versions")
    card = driver.find_element(By.ID, f"version-{stack.second}").text
    assert stack.first in card  # the parent
    assert "passed" in card or "failed" in card  # gates with their numbers
    shot(stack, driver, "versions")
    submit(driver, driver.find_element(By.ID, f"promote-{stack.second}"))
    assert "Promotion requested" in driver.find_element(By.ID, "message").text
    stack.observer.wait_for(
        lambda: [p for p in stack.observer.promoted if p.model.version == stack.second],
        60,
        "model.promoted of the candidate",
    )
    assert stack.registry.promoted(MODEL).version == stack.second
    # the win rate table names the versions for operators
    driver.get(f"{stack.url}/compare")
    assert stack.first in driver.find_element(By.ID, "win-rates").text


def test_runs_page_draws_charts(stack, driver):
    sign_in(driver, stack.url, OPERATOR)
    driver.get(f"{stack.url}/runs")
    rows = driver.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert len(rows) >= 2, driver.page_source[:3000]
    assert driver.find_elements(By.CSS_SELECTOR, "#charts svg.chart polyline")  # a curve
    shot(stack, driver, "runs")


def test_inference_down_is_said(stack, driver):
    sign_in(driver, stack.down_url, LABELLER)
    driver.get(f"{stack.down_url}/compare")
    driver.find_element(By.ID, "prompt-input").send_keys("这家")
    submit(driver, driver.find_element(By.ID, "compare-typed"))
    assert "unavailable" in driver.find_element(By.ID, "error").text
    assert driver.find_element(By.ID, "inference-down").is_displayed()
    shot(stack, driver, "compare-inference-down")


def test_the_preference_is_in_the_lineage_of_the_next_version(stack, driver):
    """Enough more feedback to fire the trigger: the retrained version's lineage (as
    `rlhf models show` prints it) names the window holding the console's preference."""
    import json

    from typer.testing import CliRunner

    from rlhf.cli import _register_subcommands, app

    compared = getattr(stack, "compared", None)
    if compared is None:
        pytest.fail("the Compare test did not record a preference")
    store = FeedbackStore(stack.root / "state" / "dataprep" / "feedback.sqlite")
    serving = stack.registry.promoted(MODEL).version
    for i in range(max(0, 50 - len(store.pending(PIPELINE)))):
        stack.client.record_feedback(
            f"req-{i}",
            serving,
            kind="label",
            prompt=f"服务很好，第{i}次入住",
            label="positive",
            pipeline=PIPELINE,
            feedback_id=f"fill-{i}",
        )
    retrained = stack.observer.wait_for(
        lambda: [
            c.model
            for c in stack.observer.checkpoints
            if c.model.name == MODEL and c.model.lineage.parent_version == serving
        ],
        600,
        "the retrained candidate",
    )[0]
    _register_subcommands()
    shown = CliRunner().invoke(
        app, ["models", "show", retrained.version, "--artifact-dir", str(stack.root)]
    )
    assert shown.exit_code == 0, shown.output
    windows = json.loads(shown.output)["lineage"]["feedback_windows"]
    assert any(compared in w["feedback_ids"] for w in windows), windows
    assert int(windows[0]["counts"]["preference"]) >= 1  # int64 prints as a string
