"""Real services for tests: the PostgreSQL server and headless Chromium of `.ci/services`.

`make test` installs and starts them, and exports

* ``NAS_TEST_POSTGRES_URL``: ``postgresql://nas:nas@127.0.0.1:55432/nas_test`` (the role may
  create databases), and
* ``NAS_TEST_CHROMIUM``: Debian's ``/usr/bin/chromium``.

Without them a test that needs one is skipped locally, but fails when ``CI`` is set: CI must never
pass by skipping. To run such tests by hand::

    .ci/services install && .ci/services start
    NAS_TEST_POSTGRES_URL=$(.ci/services url) .venv/bin/python -m pytest -q tests/test_services.py
    .ci/services stop

URLs: libpq and psycopg take ``postgresql://``; SQLAlchemy (and so Optuna's ``RDBStorage``) reads
a plain ``postgresql://`` as psycopg2, which is not installed, and needs ``postgresql+psycopg://``.
`fresh_database` returns the SQLAlchemy form; `libpq_url` and `sqlalchemy_url` convert.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

POSTGRES_ENV = "NAS_TEST_POSTGRES_URL"
CHROMIUM_ENV = "NAS_TEST_CHROMIUM"
DEBIAN_CHROMIUM = "/usr/bin/chromium"

# Headless, as root in a container, with no network: the background-networking flags keep
# Chromium from calling home (updates, sync, field trials) and waiting on the closed network.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    """Skip locally; fail under CI, where every service must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: run the tests through `make test`)", pytrace=False)
    pytest.skip(reason)


# PostgreSQL ----------------------------------------------------------------------------------


def postgres_url() -> str:
    """The test server's URL (``postgresql://``), from ``NAS_TEST_POSTGRES_URL``."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        _unavailable(f"{POSTGRES_ENV} is not set: start a server with `.ci/services start`")
    return url


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL on psycopg 3: ``postgresql+psycopg://``."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a libpq URL (``postgresql://``), for `psycopg.connect`."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name:
        raise ValueError(f"no database in {make_url(url)!r}")
    return name


def _admin(url: str):
    """An autocommit connection to the server's base database (CREATE/DROP DATABASE)."""
    import psycopg

    return psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10)


def fresh_database(url: str) -> str:
    """Create a new, empty database ``nas_test_<8 hex>`` on `url`'s server; its SQLAlchemy URL.

    `url` is any database on that server whose role may create databases (`postgres_url`).
    Drop it with `drop_database`, or use `temporary_database`.
    """
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"nas_test_{uuid.uuid4().hex[:8]}"
    with _admin(url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return sqlalchemy_url(make_url(url).set(database=name).render_as_string(hide_password=False))


def drop_database(url: str, base_url: str | None = None) -> None:
    """Drop `url`'s database, connected to `base_url` (default: the server's ``postgres``).

    FORCE (PostgreSQL 13+) ends the sessions a crashed worker may have left behind.
    """
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = database_name(url)
    base = make_url(base_url) if base_url else make_url(url).set(database="postgres")
    if base.database == name:
        raise ValueError(f"cannot drop {name!r} while connected to it")
    with _admin(base.render_as_string(hide_password=False)) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def temporary_database(url: str) -> Iterator[str]:
    """A `fresh_database` for the ``with`` block (or a pytest fixture), dropped after."""
    db_url = fresh_database(url)
    try:
        yield db_url
    finally:
        drop_database(db_url, base_url=url)


def database_exists(url: str, name: str) -> bool:
    """Whether the server of `url` has a database called `name`."""
    with _admin(url) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


# Chromium ------------------------------------------------------------------------------------


def chromium_path() -> str:
    """Debian's Chromium: ``NAS_TEST_CHROMIUM``, else ``/usr/bin/chromium`` when it exists."""
    path = os.environ.get(CHROMIUM_ENV, "").strip()
    if path:
        if not os.access(path, os.X_OK):
            _unavailable(f"{CHROMIUM_ENV}={path} is not an executable")
        return path
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    _unavailable(f"no Chromium: set {CHROMIUM_ENV} or run `.ci/services install`")


@dataclass
class PageCheck:
    """A page open in headless Chromium, and what went wrong while it loaded and ran."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Every error, labelled: empty for a clean page (handy in an assert message)."""
        return (
            [f"console: {e}" for e in self.console_errors]
            + [f"page error: {e}" for e in self.page_errors]
            + [f"request failed: {e}" for e in self.failed_requests]
        )


def _settle(page: Page, timeout_ms: float) -> None:
    """Wait until the network has been idle for 500 ms, then for two animation frames."""
    with contextlib.suppress(Exception):  # a page that keeps polling never goes idle
        page.wait_for_load_state("networkidle", timeout=timeout_ms)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


@contextlib.contextmanager
def open_page(
    html_path: str | os.PathLike[str],
    screenshot: str | os.PathLike[str] | None = None,
    *,
    viewport: tuple[int, int] = (1280, 800),
    timeout_s: float = 30.0,
) -> Iterator[PageCheck]:
    """Open a local HTML file in headless Chromium (Playwright), collecting its errors.

    Yields a `PageCheck` once the page has loaded and settled. Console messages of type
    ``error``, uncaught exceptions (``pageerror``) and failed requests are collected for the
    whole time the page is open. On exit, a full-page PNG is saved to `screenshot` if given.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    url = Path(html_path).resolve().as_uri()
    timeout_ms = timeout_s * 1000
    with (
        tempfile.TemporaryDirectory(prefix="nas-chromium-") as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": viewport[0], "height": viewport[1]},
            timeout=timeout_ms,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(timeout_ms)
            check = PageCheck(page)

            def on_console(msg) -> None:
                if msg.type == "error":
                    where = msg.location or {}
                    check.console_errors.append(
                        f"{msg.text} ({where.get('url', '')}:{where.get('lineNumber', '')})"
                    )

            def on_page_error(error) -> None:
                name = getattr(error, "name", None)
                check.page_errors.append(f"{name}: {error.message}" if name else error.message)

            def on_request_failed(request) -> None:
                check.failed_requests.append(f"{request.url}: {request.failure}")

            page.on("console", on_console)
            page.on("pageerror", on_page_error)
            page.on("requestfailed", on_request_failed)
            page.goto(url, wait_until="load")
            _settle(page, timeout_ms)
            failed = True
            try:
                yield check
                failed = False
            finally:
                if screenshot is not None:
                    try:
                        page.screenshot(path=str(screenshot), full_page=True)
                    except Exception:
                        if not failed:
                            raise  # else keep the test's own error
        finally:
            context.close()
