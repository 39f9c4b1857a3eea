"""The test infrastructure itself, on the real things: PostgreSQL shared by worker processes
through Optuna, and headless Chromium checking pages (tests/services.py, .ci/services)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg
import pytest

from tests import services

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A worker process: joins the study, waits for the others, then optimizes.
WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import optuna

    url, study_name, n_trials, barrier, n_workers, worker = sys.argv[1:]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=study_name,
        storage=optuna.storages.RDBStorage(url),
        sampler=optuna.samplers.RandomSampler(seed=int(worker)),
    )
    # Start together, so the workers really share the study at the same time.
    barrier = Path(barrier)
    (barrier / worker).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < int(n_workers):
        if time.monotonic() > deadline:
            sys.exit("the other workers never started")
        time.sleep(0.02)

    def objective(trial):
        trial.set_user_attr("worker", worker)
        x = trial.suggest_float("x", -10, 10)
        time.sleep(0.15)
        return (x - 2) ** 2

    study.optimize(objective, n_trials=int(n_trials))
    """
)


def _public_tables(url: str) -> list[str]:
    with psycopg.connect(services.libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return sorted(r[0] for r in rows)


def test_temporary_database_is_fresh_and_dropped():
    base = services.postgres_url()
    with (
        services.temporary_database(base) as first,
        services.temporary_database(base) as second,
    ):
        assert first.startswith("postgresql+psycopg://")
        names = services.database_name(first), services.database_name(second)
        assert names[0] != names[1]
        assert all(name.startswith("nas_test_") for name in names)
        assert all(services.database_exists(base, name) for name in names)
        assert _public_tables(first) == []
        # The URL works with SQLAlchemy on psycopg 3, as Optuna will use it.
        import sqlalchemy

        engine = sqlalchemy.create_engine(first)
        try:
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text("CREATE TABLE t (x int)"))
                conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1), (2)"))
                assert conn.execute(sqlalchemy.text("SELECT sum(x) FROM t")).scalar() == 3
        finally:
            engine.dispose()
        assert _public_tables(first) == ["t"]
        assert _public_tables(second) == []
    assert not any(services.database_exists(base, name) for name in names)


def test_optuna_study_shared_by_worker_processes(postgres_db, tmp_path):
    import optuna

    n_workers, n_trials = 2, 5
    storage = optuna.storages.RDBStorage(postgres_db)
    assert storage.engine.dialect.name == "postgresql"
    assert storage.engine.dialect.driver == "psycopg"
    study = optuna.create_study(study_name="shared", storage=storage, direction="minimize")

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    argv = [sys.executable, "-c", WORKER, postgres_db, "shared", str(n_trials), str(barrier)]
    workers = [
        subprocess.Popen(
            [*argv, str(n_workers), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n_workers)
    ]
    try:
        for proc in workers:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"worker failed:\n{out}\n{err}"
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == len(complete) == n_workers * n_trials
    assert sorted(t.number for t in complete) == list(range(n_workers * n_trials))
    for t in complete:
        assert t.value == pytest.approx((t.params["x"] - 2) ** 2)
    by_worker = {
        str(i): [t for t in complete if t.user_attrs["worker"] == str(i)] for i in range(n_workers)
    }
    assert [len(ts) for ts in by_worker.values()] == [n_trials] * n_workers
    # The workers ran at the same time: their spans overlap.
    spans = [
        (min(t.datetime_start for t in ts), max(t.datetime_complete for t in ts))
        for ts in by_worker.values()
    ]
    assert max(s for s, _ in spans) < min(e for _, e in spans)

    # The rows are in PostgreSQL, seen without Optuna.
    with psycopg.connect(services.libpq_url(postgres_db)) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM trials JOIN studies USING (study_id) "
            "WHERE study_name = 'shared' AND trials.state = 'COMPLETE'"
        ).fetchone()
    assert count == n_workers * n_trials


def test_plotly_page_renders_without_errors(chromium, tmp_path):
    import plotly.graph_objects as go
    import plotly.io as pio
    from PIL import Image

    ys = [3, 1, 4, 1, 5, 9, 2]
    fig = go.Figure(go.Scatter(x=list(range(len(ys))), y=ys, mode="markers", marker_size=12))
    html = tmp_path / "scatter.html"
    pio.write_html(fig, str(html), include_plotlyjs=True, full_html=True)
    shot = tmp_path / "scatter.png"

    with services.open_page(html, screenshot=shot) as check:
        check.page.wait_for_selector(".scatterlayer path.point", state="attached")
        assert check.page.locator(".scatterlayer path.point").count() == len(ys)
        assert check.page.evaluate("() => typeof Plotly") == "object"
        assert check.problems == []

    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.width == 1280
        assert rgb.height >= 400
        # Plotly's first trace colour (#636efa) is on screen: the markers were painted
        # (a 12 px marker covers ~100 px).
        blue = sum(
            n
            for n, (r, g, b) in rgb.getcolors(maxcolors=rgb.width * rgb.height)
            if abs(r - 0x63) < 24 and abs(g - 0x6E) < 24 and abs(b - 0xFA) < 24
        )
        assert blue >= 7 * 50


def test_open_page_reports_errors(chromium, tmp_path):
    html = tmp_path / "broken.html"
    html.write_text(
        textwrap.dedent(
            """\
            <!doctype html>
            <html><body>
            <p>broken on purpose</p>
            <img src="missing-image.png">
            <script>console.error("logged-on-purpose");</script>
            <script>setTimeout(() => { throw new Error("late-on-purpose"); }, 50);</script>
            <script>throw new TypeError("thrown-on-purpose");</script>
            </body></html>
            """
        )
    )
    with services.open_page(html) as check:
        assert any("thrown-on-purpose" in e for e in check.page_errors), check.page_errors
        assert any("late-on-purpose" in e for e in check.page_errors), check.page_errors
        assert any("logged-on-purpose" in e for e in check.console_errors), check.console_errors
        assert any("missing-image.png" in r for r in check.failed_requests), check.failed_requests
        assert len(check.problems) >= 4


def test_missing_services_skip_locally_but_fail_in_ci(monkeypatch):
    monkeypatch.delenv(services.POSTGRES_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        services.postgres_url()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        services.postgres_url()
    monkeypatch.setenv(services.CHROMIUM_ENV, "/nonexistent/chromium")
    with pytest.raises(pytest.fail.Exception):
        services.chromium_path()
