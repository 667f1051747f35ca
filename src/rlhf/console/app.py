"""The console's WSGI application: sign-in, Compare, Rate / label, Versions, Runs.

Plain HTML forms rendered on the server, no JavaScript. Every response carries a strict
Content-Security-Policy; every POST needs the session's CSRF token; every action checks
the signed-in person's role on the server.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rlhf.console.assets import CSS
from rlhf.console.auth import SESSION_COOKIE, Session, Sessions, TokenStore, User, csrf_ok
from rlhf.console.backend import Backend, ConsoleError, ServiceDown
from rlhf.console.html import Html, fmt, h, join, line_chart, progress_bar
from rlhf.workflows.promotion import GATE_INPUTS  # the metrics each gate reads

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
MAX_BODY = 64 * 1024
STATUS_TEXT = {
    200: "200 OK",
    303: "303 See Other",
    400: "400 Bad Request",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    413: "413 Payload Too Large",
    502: "502 Bad Gateway",
    503: "503 Service Unavailable",
}
# Messages shown after a redirect: fixed texts chosen by a code, never echoed input.
MESSAGES = {
    "recorded": "Thank you: your choice was recorded.",
    "queued": (
        "The inference service is unavailable: your choice is kept by the console and "
        "sent as soon as it is back."
    ),
    "tie": "Recorded as a tie (no preference pair is sent to the platform).",
    "promoted": "Promotion requested: model.promoted was published.",
    "rolledback": "Rollback requested: the previous version is being served again.",
    "signedout": "You are signed out.",
    "feedback": "Thank you: your feedback was recorded.",
}
# Chart -> words of the metric names it draws (PPO logs "score", RLOO/GRPO "reward", ...).
CHART_GROUPS = (
    (("reward", "score", "rewards"), "Reward"),
    (("kl",), "KL"),
    (("judge",), "Judge"),
)
KINDS = {0: "?", 1: "policy", 2: "reward", 3: "classifier"}
RUN_STATES = {0: "unspecified", 1: "pending", 2: "running", 3: "succeeded", 4: "failed"}
RUN_STATES[5] = "cancelled"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    cookies: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _first(values: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in values.items() if v}


def _parse(environ: dict[str, Any]) -> Request:
    method = environ.get("REQUEST_METHOD", "GET").upper()
    query = _first(urllib.parse.parse_qs(environ.get("QUERY_STRING", "")))
    form: dict[str, str] = {}
    if method == "POST":
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise _TooLarge
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        form = _first(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    cookies = {}
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            cookies[name] = value
    return Request(method, environ.get("PATH_INFO", "/") or "/", query, form, cookies)


class _TooLarge(Exception):
    pass


def redirect(location: str) -> Reply:
    return Reply(303, b"", headers=[("Location", location)])


class ConsoleApp:
    """WSGI callable. `backend` does the work; `tokens` and `sessions` the people."""

    def __init__(
        self,
        backend: Backend,
        tokens: TokenStore,
        *,
        sessions: Sessions | None = None,
        secure_cookies: bool = False,
        title: str = "RLHF console",
    ) -> None:
        self.backend = backend
        self.tokens = tokens
        self.sessions = sessions or Sessions()
        self.anonymous = Sessions(ttl_s=3600)  # sign-in forms only
        self.secure_cookies = secure_cookies
        self.title = title
        self.css = CSS.encode("utf-8")
        self.routes: dict[tuple[str, str], Callable[[Request, Session, User], Reply]] = {
            ("GET", "/compare"): self.compare_page,
            ("POST", "/compare/new"): self.compare_new,
            ("POST", "/compare/choose"): self.compare_choose,
            ("GET", "/rate"): self.rate_page,
            ("POST", "/rate/new"): self.rate_new,
            ("POST", "/rate/submit"): self.rate_submit,
            ("GET", "/versions"): self.versions_page,
            ("POST", "/versions/promote"): self.versions_promote,
            ("POST", "/versions/rollback"): self.versions_rollback,
            ("GET", "/runs"): self.runs_page,
        }

    # -- WSGI --------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        new_session: Session | None = None
        try:
            request = _parse(environ)
            sid = request.cookies.get(SESSION_COOKIE)
            session = self.sessions.get(sid) or self.anonymous.get(sid)
            if session is None and request.path == "/signin":
                # Only the sign-in page needs a session before sign-in (its CSRF token);
                # those live in their own bounded store, apart from signed-in sessions.
                session = new_session = self.anonymous.new()
            reply = self.dispatch(request, session)
        except _TooLarge:
            reply = Reply(413, b"request too large", "text/plain; charset=utf-8")
        except Exception:  # noqa: BLE001 - never a traceback in the page
            log.exception("console request failed")
            reply = Reply(500, b"internal error", "text/plain; charset=utf-8")
        headers = [("Content-Type", reply.content_type), *SECURITY_HEADERS, *reply.headers]
        if new_session is not None and not any(k == "Set-Cookie" for k, _ in reply.headers):
            headers.append(("Set-Cookie", self._cookie(new_session.id)))
        headers.append(("Content-Length", str(len(reply.body))))
        start_response(STATUS_TEXT.get(reply.status, f"{reply.status} Error"), headers)
        return [reply.body]

    def _cookie(self, session_id: str, clear: bool = False) -> str:
        parts = [f"{SESSION_COOKIE}={'' if clear else session_id}", "Path=/", "HttpOnly"]
        parts.append("SameSite=Strict")
        if self.secure_cookies:
            parts.append("Secure")
        if clear:
            parts.append("Max-Age=0")
        return "; ".join(parts)

    def dispatch(self, request: Request, session: Session | None) -> Reply:
        path = request.path
        if path == "/static/console.css" and request.method == "GET":
            return Reply(200, self.css, "text/css; charset=utf-8")
        if path == "/healthz":
            return Reply(200, b"ok", "text/plain; charset=utf-8")
        if path == "/signin":
            assert session is not None
            return self.signin(request, session)
        user = self._user(session)
        if session is None or user is None:  # not signed in, expired, or token revoked
            return redirect("/signin")
        if request.method == "POST" and not csrf_ok(session, request.form.get("csrf", "")):
            return self.page(
                "Form expired",
                session,
                user,
                h('<p class="error">This form has expired. Reload the page and try again.</p>'),
                status=403,
            )
        if path == "/signout" and request.method == "POST":
            self.sessions.drop(session.id)
            return Reply(
                303,
                headers=[
                    ("Location", "/signin?msg=signedout"),
                    ("Set-Cookie", self._cookie("", clear=True)),
                ],
            )
        if path == "/" and request.method == "GET":
            return redirect("/compare")
        if path.startswith("/runs/") and request.method == "GET":
            return self.run_page(request, session, user, urllib.parse.unquote(path[6:]))
        handler = self.routes.get((request.method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                return Reply(405, b"method not allowed", "text/plain; charset=utf-8")
            return self.page("Not found", session, user, h("<p>No such page.</p>"), status=404)
        return handler(request, session, user)

    def _user(self, session: Session | None) -> User | None:
        if session is None or not session.signed_in:
            return None
        user = self.tokens.user_for_digest(session.token_digest)
        if user is None or user.id != session.user_id:
            self.sessions.drop(session.id)
            return None
        return user

    # -- layout ------------------------------------------------------------------------
    def page(
        self,
        title: str,
        session: Session,
        user: User | None,
        body: Html,
        *,
        status: int = 200,
        message: str = "",
        error: str = "",
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        nav = Html("")
        if user is not None:
            links = join(
                h(
                    '<a href="{}"{}>{}</a>',
                    href,
                    Html(' class="here"' if name == title else ""),
                    name,
                )
                for href, name in (
                    ("/compare", "Compare"),
                    ("/rate", "Rate / label"),
                    ("/versions", "Versions"),
                    ("/runs", "Runs"),
                )
            )
            nav = h(
                '<nav>{links}</nav><form class="who" method="post" action="/signout">'
                '<input type="hidden" name="csrf" value="{csrf}">'
                '<span id="user">{uid}</span> <span class="role">{role}</span> '
                '<button type="submit">Sign out</button></form>',
                links=links,
                csrf=session.csrf,
                uid=user.id,
                role=user.role,
            )
        banner = Html("")
        if user is not None and self.backend.inference_error:
            waiting = self.backend.pending_for(user.id)
            banner = h(
                '<p class="banner" id="inference-down">The inference service is unavailable '
                "({}). Your choices are kept by the console and sent when it is back"
                "{}.</p>",
                self.backend.inference_error,
                f" ({waiting} waiting)" if waiting else "",
            )
        notes = join(
            [
                h('<p class="message" id="message">{}</p>', message) if message else "",
                h('<p class="error" id="error">{}</p>', error) if error else "",
            ]
        )
        document = h(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>{title} · {app}</title>"
            '<link rel="stylesheet" href="/static/console.css"></head>'
            '<body><header><span class="brand">{app}</span>{nav}</header>{banner}'
            "<main><h1>{title}</h1>{notes}{body}</main></body></html>",
            title=title,
            app=self.title,
            nav=nav,
            banner=banner,
            notes=notes,
            body=body,
        )
        return Reply(status, document.encode("utf-8"), headers=headers or [])

    def _message(self, request: Request) -> str:
        return MESSAGES.get(request.query.get("msg", ""), "")

    # -- sign-in -----------------------------------------------------------------------
    def signin(self, request: Request, session: Session) -> Reply:
        error = ""
        status = 200
        if request.method == "POST":
            if not csrf_ok(session, request.form.get("csrf", "")):
                error, status = "This form has expired. Try again.", 403
            else:
                found = self.tokens.authenticate(request.form.get("token", ""))
                if found is not None:
                    user, digest = found
                    self.anonymous.drop(session.id)  # a fresh id: no session fixation
                    self.sessions.drop(session.id)
                    fresh = self.sessions.new(digest, user.id)
                    log.info("%s signed in (%s)", user.id, user.role)
                    return Reply(
                        303,
                        headers=[("Location", "/compare"), ("Set-Cookie", self._cookie(fresh.id))],
                    )
                error, status = "Unknown or expired token.", 403
        elif request.method != "GET":
            return Reply(405, b"method not allowed", "text/plain; charset=utf-8")
        body = h(
            '<form id="signin" method="post" action="/signin" class="card">'
            '<input type="hidden" name="csrf" value="{}">'
            '<label for="token">Sign-in token</label>'
            '<input id="token" name="token" type="password" autocomplete="off" required>'
            '<button type="submit">Sign in</button></form>',
            session.csrf,
        )
        return self.page(
            "Sign in",
            session,
            None,
            body,
            status=status,
            error=error,
            message=self._message(request),
        )

    # -- compare -----------------------------------------------------------------------
    def compare_page(
        self,
        request: Request,
        session: Session,
        user: User,
        *,
        error: str = "",
        status: int = 200,
        prompt: str = "",
    ) -> Reply:
        parts: list[object] = []
        comparison = self.backend.comparison(request.query.get("c", ""), user.id)
        if comparison is not None and not comparison.choice:
            note = h('<p class="muted">{}</p>', comparison.note) if comparison.note else ""
            same = comparison.identical
            disabled = Html(" disabled") if same else Html("")
            parts.append(
                h(
                    '<section class="comparison"><h2>Prompt</h2>'
                    '<pre id="prompt">{prompt}</pre>{note}<div class="pair">'
                    '<div class="response"><h2>A</h2><pre id="response-a">{a}</pre></div>'
                    '<div class="response"><h2>B</h2><pre id="response-b">{b}</pre></div></div>'
                    '<form id="choose" method="post" action="/compare/choose">'
                    '<input type="hidden" name="csrf" value="{csrf}">'
                    '<input type="hidden" name="c" value="{cid}">'
                    '<label for="comment">Comment (optional, stays in the console)</label>'
                    '<textarea id="comment" name="comment" rows="2" maxlength="4000"></textarea>'
                    '<div class="choices">'
                    '<button id="choose-a" name="choice" value="a"{disabled}>A is better</button>'
                    '<button id="choose-b" name="choice" value="b"{disabled}>B is better</button>'
                    '<button id="choose-tie" name="choice" value="tie">Tie</button>'
                    '<button id="choose-bad" name="choice" value="bad">Both bad</button>'
                    "</div></form></section>",
                    prompt=comparison.prompt,
                    note=note,
                    a=comparison.a.text,
                    b=comparison.b.text,
                    csrf=session.csrf,
                    cid=comparison.id,
                    disabled=disabled,
                )
            )
        elif comparison is not None:
            outcome = {
                "queued": MESSAGES["queued"],
                "recorded": MESSAGES["tie"] if comparison.choice == "tie" else MESSAGES["recorded"],
            }.get(comparison.status, comparison.status)
            side = {"a": "A", "b": "B", "tie": "a tie", "bad": "both bad"}[comparison.choice]
            parts.append(
                h(
                    '<p class="message" id="outcome" data-status="{}">You chose {}. {}</p>',
                    comparison.status.split(":", 1)[0],
                    side,
                    outcome,
                )
            )
        parts.append(
            h(
                '<form id="new-comparison" method="post" action="/compare/new" class="card">'
                '<input type="hidden" name="csrf" value="{csrf}">'
                '<label for="prompt-input">Prompt</label>'
                '<textarea id="prompt-input" name="prompt" rows="2" maxlength="4000">'
                "{prompt}</textarea>"
                '<div class="choices"><button id="compare-typed" name="source" value="typed">'
                "Compare on this prompt</button>"
                '<button id="compare-pool" name="source" value="pool" formnovalidate>'
                "Draw a prompt from the pool</button></div></form>",
                csrf=session.csrf,
                prompt=prompt,
            )
        )
        if user.is_operator:
            parts.append(self._win_rates())
        return self.page(
            "Compare",
            session,
            user,
            join(parts),
            status=status,
            error=error,
            message=self._message(request),
        )

    def _win_rates(self) -> Html:
        rows = []
        for (first, second), stats in self.backend.win_rate_rows():
            rows.append(
                h(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                    "<td>{}</td></tr>",
                    first,
                    second,
                    stats.wins[first],
                    stats.wins[second],
                    stats.ties,
                    stats.both_bad,
                    "–" if stats.rate(first) is None else f"{stats.rate(first):.0%}",
                )
            )
        recent = [
            h(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.user_id,
                c.a.version if c.choice == "a" else c.b.version if c.choice == "b" else "–",
                {"a": "A", "b": "B", "tie": "tie", "bad": "both bad"}[c.choice],
                c.comment,
                c.status,
            )
            for c in self.backend.recent_choices()
        ]
        return h(
            '<section id="win-rates"><h2>Win rate per version pair</h2>'
            "<table><thead><tr><th>version 1</th><th>version 2</th><th>wins 1</th>"
            "<th>wins 2</th><th>ties</th><th>both bad</th><th>win rate of 1</th></tr></thead>"
            "<tbody>{}</tbody></table>"
            "<h2>Recent choices</h2><table><thead><tr><th>labeller</th><th>preferred</th>"
            "<th>side</th><th>comment</th><th>status</th></tr></thead><tbody>{}</tbody></table>"
            "</section>",
            join(rows) or h('<tr><td colspan="7">no comparisons yet</td></tr>'),
            join(recent) or h('<tr><td colspan="5">none yet</td></tr>'),
        )

    def compare_new(self, request: Request, session: Session, user: User) -> Reply:
        prompt = request.form.get("prompt", "")
        try:
            if request.form.get("source") == "pool":
                prompt = self.backend.draw_prompt()
            comparison = self.backend.new_comparison(user.id, prompt)
        except ServiceDown as exc:
            return self.compare_page(
                request, session, user, error=str(exc), status=503, prompt=prompt
            )
        except ConsoleError as exc:
            return self.compare_page(
                request, session, user, error=str(exc), status=400, prompt=prompt
            )
        return redirect(f"/compare?c={urllib.parse.quote(comparison.id)}")

    def compare_choose(self, request: Request, session: Session, user: User) -> Reply:
        cid = request.form.get("c", "")
        try:
            comparison = self.backend.choose(
                cid, user.id, request.form.get("choice", ""), request.form.get("comment", "")
            )
        except ConsoleError as exc:
            return self.compare_page(request, session, user, error=str(exc), status=409)
        return redirect(f"/compare?c={urllib.parse.quote(comparison.id)}")

    # -- rate / label ------------------------------------------------------------------
    def rate_page(
        self, request: Request, session: Session, user: User, *, error: str = "", status: int = 200
    ) -> Reply:
        parts: list[object] = []
        item = self.backend.rate_item(request.query.get("i", ""), user.id)
        if item is not None:
            done = ", ".join(sorted(item.done))
            parts.append(
                h(
                    '<section class="card" id="rate-item">'
                    '{prompt}<h2>Response</h2><pre id="rate-text">{text}</pre>'
                    '<form id="rate" method="post" action="/rate/submit">'
                    '<input type="hidden" name="csrf" value="{csrf}">'
                    '<input type="hidden" name="i" value="{iid}">'
                    '<div class="choices">'
                    '<button id="thumbs-up" name="fb" value="thumbs:up">👍 Good</button>'
                    '<button id="thumbs-down" name="fb" value="thumbs:down">👎 Bad</button></div>'
                    '<div class="choices"><label for="rating">Rating</label>'
                    '<select id="rating" name="rating">{options}</select>'
                    '<button id="rate-submit" name="fb" value="rating">Rate</button></div>'
                    '<div class="choices"><label for="label">Corrected label</label>'
                    '<input id="label" name="label" maxlength="200">'
                    '<button id="label-submit" name="fb" value="label">Save label</button></div>'
                    "</form>{done}</section>",
                    prompt=h("<h2>Prompt</h2><pre>{}</pre>", item.prompt) if item.prompt else "",
                    text=item.response,
                    csrf=session.csrf,
                    iid=item.id,
                    options=join(h('<option value="{0}">{0}</option>', n) for n in range(5, 0, -1)),
                    done=h('<p class="muted">Recorded: {}</p>', done) if done else "",
                )
            )
        parts.append(
            h(
                '<form id="new-rate" method="post" action="/rate/new" class="card">'
                '<input type="hidden" name="csrf" value="{}">'
                '<label for="rate-prompt">Prompt (the serving version writes a response)</label>'
                '<textarea id="rate-prompt" name="prompt" rows="2" maxlength="4000"></textarea>'
                '<label for="rate-input">or a text to rate or label</label>'
                '<textarea id="rate-input" name="text" rows="3" maxlength="4000"></textarea>'
                '<button id="rate-new" type="submit">Show</button></form>',
                session.csrf,
            )
        )
        return self.page(
            "Rate / label",
            session,
            user,
            join(parts),
            status=status,
            error=error,
            message=self._message(request),
        )

    def rate_new(self, request: Request, session: Session, user: User) -> Reply:
        try:
            item = self.backend.new_rate_item(
                user.id, request.form.get("prompt", ""), request.form.get("text", "")
            )
        except ServiceDown as exc:
            return self.rate_page(request, session, user, error=str(exc), status=503)
        except ConsoleError as exc:
            return self.rate_page(request, session, user, error=str(exc), status=400)
        return redirect(f"/rate?i={urllib.parse.quote(item.id)}")

    def rate_submit(self, request: Request, session: Session, user: User) -> Reply:
        item_id = request.form.get("i", "")
        kind, _, value = request.form.get("fb", "").partition(":")
        if kind == "rating":
            value = request.form.get("rating", "")
        elif kind == "label":
            value = request.form.get("label", "")
        try:
            status = self.backend.rate(item_id, user.id, kind, value)
        except ConsoleError as exc:
            request.query["i"] = item_id
            return self.rate_page(request, session, user, error=str(exc), status=400)
        if status.startswith("failed"):
            request.query["i"] = item_id
            return self.rate_page(request, session, user, error=status, status=400)
        msg = "queued" if status == "queued" else "feedback"
        return redirect(f"/rate?i={urllib.parse.quote(item_id)}&msg={msg}")

    # -- versions ----------------------------------------------------------------------
    def versions_page(
        self, request: Request, session: Session, user: User, *, error: str = "", status: int = 200
    ) -> Reply:
        try:
            models = self.backend.list_models()
        except ConsoleError as exc:
            return self.page("Versions", session, user, Html(""), status=503, error=str(exc))
        models.sort(key=lambda m: (m.name, m.created_at.seconds, m.created_at.nanos, m.version))
        sections = []
        for name in dict.fromkeys(m.name for m in models):
            versions = [m for m in models if m.name == name][::-1]  # newest first
            rollback = Html("")
            if user.is_operator and any(m.promoted for m in versions):
                rollback = h(
                    '<form class="inline" method="post" action="/versions/rollback">'
                    '<input type="hidden" name="csrf" value="{}">'
                    '<input type="hidden" name="name" value="{}">'
                    '<input name="reason" placeholder="reason" maxlength="1000">'
                    '<button class="danger" id="rollback-{}">Roll back</button></form>',
                    session.csrf,
                    name,
                    name,
                )
            sections.append(
                h(
                    '<section class="model"><h2>{}</h2>{}{}</section>',
                    name,
                    rollback,
                    join(self._version(m, session, user) for m in versions),
                )
            )
        body = join(sections) or h("<p>No model versions yet.</p>")
        return self.page(
            "Versions",
            session,
            user,
            body,
            status=status,
            error=error,
            message=self._message(request),
        )

    def _version(self, m: Any, session: Session, user: User) -> Html:
        lineage = m.lineage
        metrics = dict(lineage.metrics)
        gates = []
        for gate, passed in sorted(m.gates.items()):
            numbers = ", ".join(
                f"{key}={fmt(metrics[key])}" for key in GATE_INPUTS.get(gate, ()) if key in metrics
            )
            gates.append(
                h(
                    '<li class="{}">{} {}{}</li>',
                    "pass" if passed else "fail",
                    "✔ passed" if passed else "✘ failed",
                    gate,
                    f" ({numbers})" if numbers else "",
                )
            )
        windows = [
            h(
                "<li>{} : {} ({} feedback ids)</li>",
                w.window_id,
                ", ".join(f"{k}={v}" for k, v in sorted(w.counts.items())),
                len(w.feedback_ids),
            )
            for w in lineage.feedback_windows
        ]
        datasets = [
            h('<li>{} <span class="muted">{}</span></li>', d.uri, d.digest[:19])
            for d in lineage.datasets
        ]
        promote = Html("")
        if user.is_operator and not m.promoted:
            promote = h(
                '<form class="inline" method="post" action="/versions/promote">'
                '<input type="hidden" name="csrf" value="{}">'
                '<input type="hidden" name="version" value="{}">'
                '<input name="reason" placeholder="reason" maxlength="1000">'
                '<button id="promote-{}">Promote</button></form>',
                session.csrf,
                m.version,
                m.version,
            )
        created = (
            m.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if m.created_at.seconds else ""
        )
        return h(
            '<article class="version{cls}" id="version-{v}"><h3>{v} <span class="tag">{kind}</span>'
            "{badge}</h3>{promote}"
            "<dl><dt>created</dt><dd>{created}</dd><dt>parent</dt><dd>{parent}</dd>"
            "<dt>reward model</dt><dd>{reward}</dd><dt>run</dt><dd>{run}</dd>"
            "<dt>datasets</dt><dd><ul>{datasets}</ul></dd>"
            "<dt>feedback windows</dt><dd><ul>{windows}</ul></dd>"
            '<dt>gates</dt><dd><ul class="gates">{gates}</ul></dd></dl>'
            "<details><summary>metrics ({n})</summary><table>{metrics}</table></details></article>",
            cls=" promoted" if m.promoted else "",
            v=m.version,
            kind=KINDS.get(m.kind, "?"),
            badge=h(' <span class="badge">serving</span>') if m.promoted else "",
            promote=promote,
            created=created,
            parent=lineage.parent_version or "–",
            reward=lineage.reward_model_version or "–",
            run=lineage.run_id or "–",
            datasets=join(datasets) or h("<li>–</li>"),
            windows=join(windows) or h("<li>–</li>"),
            gates=join(gates) or h("<li>–</li>"),
            n=len(metrics),
            metrics=join(
                h("<tr><td>{}</td><td>{}</td></tr>", k, fmt(v)) for k, v in sorted(metrics.items())
            ),
        )

    def _operator_only(self, session: Session, user: User) -> Reply | None:
        if user.is_operator:
            return None
        log.warning("%s (%s) tried an operator action", user.id, user.role)
        return self.page(
            "Forbidden",
            session,
            user,
            h('<p class="error" id="forbidden">Only operators may promote or roll back.</p>'),
            status=403,
        )

    def versions_promote(self, request: Request, session: Session, user: User) -> Reply:
        refused = self._operator_only(session, user)
        if refused is not None:
            return refused
        version = request.form.get("version", "")
        reason = request.form.get("reason", "").strip() or f"promoted by {user.id} in the console"
        try:
            self.backend.client.promote_model(version, reason=f"{user.id}: {reason}"[:1000])
        except Exception as exc:  # noqa: BLE001 - grpc.RpcError: shown escaped
            return self.versions_page(request, session, user, error=_rpc_message(exc), status=502)
        log.info("%s promoted %s", user.id, version)
        return redirect("/versions?msg=promoted")

    def versions_rollback(self, request: Request, session: Session, user: User) -> Reply:
        refused = self._operator_only(session, user)
        if refused is not None:
            return refused
        name = request.form.get("name", "")
        reason = request.form.get("reason", "").strip() or "rolled back in the console"
        try:
            self.backend.client.rollback_model(name, reason=f"{user.id}: {reason}"[:1000])
        except Exception as exc:  # noqa: BLE001
            return self.versions_page(request, session, user, error=_rpc_message(exc), status=502)
        log.info("%s rolled back %s", user.id, name)
        return redirect("/versions?msg=rolledback")

    # -- runs --------------------------------------------------------------------------
    def runs_page(self, request: Request, session: Session, user: User) -> Reply:
        try:
            runs = self.backend.list_runs()
        except ConsoleError as exc:
            return self.page("Runs", session, user, Html(""), status=503, error=str(exc))
        rows = [
            h(
                '<tr><td><a href="/runs/{q}">{id}</a></td><td>{stage}</td><td>{state}</td>'
                "<td>{progress}</td><td>{metrics}</td><td>{message}</td></tr>",
                q=urllib.parse.quote(r.run_id, safe=""),
                id=r.run_id,
                stage=r.stage,
                state=RUN_STATES.get(r.state, "?"),
                progress=progress_bar(int(r.step), int(r.total_steps)),
                metrics=", ".join(f"{k}={fmt(v, 3)}" for k, v in sorted(r.metrics.items())[:6]),
                message=r.message[:200],
            )
            for r in runs
        ]
        charts = Html("")
        try:
            models = self.backend.list_models()
        except ConsoleError:
            models = []
        for run in runs[:20]:  # the newest run with a curve
            curves = self.backend.run_curves(run.run_id, models)
            if curves:
                charts = h(
                    '<section id="charts"><h2>Latest run with metrics: {}</h2>{}</section>',
                    run.run_id,
                    self._charts(curves),
                )
                break
        body = h(
            '<table id="runs"><thead><tr><th>run</th><th>stage</th><th>state</th>'
            "<th>progress</th><th>latest metrics</th><th>message</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            join(rows) or h('<tr><td colspan="6">no runs yet</td></tr>'),
            charts,
        )
        return self.page("Runs", session, user, body)

    def run_page(self, request: Request, session: Session, user: User, run_id: str) -> Reply:
        try:
            run = self.backend.get_run(run_id)
        except ConsoleError as exc:
            return self.page("Run", session, user, Html(""), status=404, error=str(exc))
        body = h(
            "<p>{stage} · {state} · {progress}</p><p>{message}</p>{charts}",
            stage=run.stage,
            state=RUN_STATES.get(run.state, "?"),
            progress=progress_bar(int(run.step), int(run.total_steps)),
            message=run.message,
            charts=self._charts(self.backend.run_curves(run.run_id)),
        )
        return self.page(f"Run {run.run_id}", session, user, body)

    def _charts(self, history: list[tuple[float, int, dict[str, float]]]) -> Html:
        charts = []
        for words, title in CHART_GROUPS:
            series: dict[str, list[tuple[float, float]]] = {}
            for index, (_, step, metrics) in enumerate(history):
                x = float(step) if step else float(index)
                for key, value in metrics.items():
                    if any(w in key.split("_") for w in words):
                        series.setdefault(key, []).append((x, value))
            charts.append(line_chart(title, series))
        return h('<div class="charts">{}</div>', join(charts))


def _rpc_message(exc: Exception) -> str:
    from rlhf.console.backend import describe

    if hasattr(exc, "code"):
        return describe(exc)  # type: ignore[arg-type]
    return str(exc)[:300]
