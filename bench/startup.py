"""How long the `nas` command takes to start: this tree against another revision, side by side.

Each command (`nas --help`, `nas teachers`) is run as a fresh `python -m nas` process from this
tree and from a checkout of `--before` (a temporary git worktree), taking turns round by round
so that a drift of the machine's speed hits both; prints the median wall time of `--rounds`
runs of each and the ratio. Before the package was cut into stages with a lazy `nas/__init__`,
`import nas` imported the whole toolkit (Optuna, Plotly, torchvision) for every command.

    python bench/startup.py [--before REV] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = (["--help"], ["teachers"])


def wall(tree: Path, args: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), COLUMNS="120")
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nas", *args], cwd=tree, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="ed273c5", help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.before],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            trees = {args.before: before, "this tree": REPO}
            times = {(name, tuple(c)): [] for name in trees for c in COMMANDS}
            for tree in trees.values():  # once each, unmeasured: bytecode caches written
                for command in COMMANDS:
                    wall(tree, command)
            for _ in range(args.rounds):
                for command in COMMANDS:
                    for name, tree in trees.items():
                        times[(name, tuple(command))].append(wall(tree, command))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=REPO, check=False
            )
    print(f"`nas` start-up, wall seconds, median of {args.rounds} (fresh processes, interleaved)")
    print(f"{'command':16} {args.before:>12} {'this tree':>12} {'ratio':>7}")
    for command in COMMANDS:
        old = statistics.median(times[(args.before, tuple(command))])
        new = statistics.median(times[("this tree", tuple(command))])
        print(f"{'nas ' + ' '.join(command):16} {old:12.2f} {new:12.2f} {old / new:7.2f}x")


if __name__ == "__main__":
    main()
