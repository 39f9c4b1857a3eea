"""The dashboard of a real study, opened in headless Chromium (Debian's, via Playwright)."""

from __future__ import annotations

from optuna.trial import TrialState

from nas.dashboard import write_dashboard
from nas.dashboard.figures import FEASIBLE, INFEASIBLE
from nas.study.hpo import run_study
from tests.services import open_page
from tests.test_study import _options

COUNT_POINTS = """() => {
  const div = document.getElementById('pareto');
  const traces = div.data.filter(t => [NAMES].includes(t.name));
  const data = traces.reduce((n, t) => n + t.x.length, 0);
  const drawn = div.querySelectorAll('.scatterlayer .trace path.point').length;
  return {data, drawn, traces: div.data.map(t => t.name)};
}""".replace("NAMES", f"{FEASIBLE!r}, {INFEASIBLE!r}")


def test_dashboard_renders_offline_with_one_point_per_trial(chromium, tmp_path):
    options = _options(tmp_path / "run", trials=3, keyframe_interval_auto=True, sampler="random")
    study = run_study(options)
    complete = len(study.get_trials(states=(TrialState.COMPLETE,)))
    page_path = write_dashboard(options.run)
    screenshot = options.run / "dashboard.png"
    with open_page(page_path, screenshot) as check:
        counts = check.page.evaluate(COUNT_POINTS)
        titles = check.page.locator("h2").all_inner_texts()
        assert not check.problems, check.problems
        assert check.page.locator("#pareto .main-svg").count() > 0  # plotly drew it
    assert counts["data"] == complete, counts
    # The front is drawn as a line and the teacher as a star: points of trials are the rest.
    assert counts["drawn"] >= complete
    assert len(titles) >= 4
    assert (
        screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )
