"""Mutation testing of the metric plugins and the engine with cosmic-ray (run on demand, not in CI).

cosmic-ray mutates the source files *in place*, one mutant at a time, runs the tests and restores the
file. In place matters here: the built-in plugins live in ``plugins/`` but import as
``xai_bridge_builtins`` through the editable install, so the mutated file is the one the tests import.
Do not run anything else in this work tree while it runs, and commit nothing until it has finished.

    pip install -e ".[dev]"
    python scripts/mutation.py                                   # the metric plugins, every mutant
    python scripts/mutation.py --sample 120 --seed 0             # a random sample (the numbers in docs/testing.md)
    python scripts/mutation.py --modules xai_bridge/engine/maps.py --tests tests/test_metric_values.py
    python scripts/mutation.py --engine-only --sample 100 --seed 0   # the engine against its own tests

It prints killed / survived / timeout / incompetent (a mutant that does not even import) and writes
each survivor's diff to ``<session>.survivors.txt`` to be classified by hand: killed by a new test,
or equivalent (no input can tell it from the original).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODULES = ["plugins/metrics/faithfulness.py", "plugins/metrics/localisation.py"]
ENGINE = [
    "xai_bridge/engine/engine.py",
    "xai_bridge/engine/maps.py",
    "xai_bridge/engine/requests.py",
    "xai_bridge/engine/sequences.py",
    "xai_bridge/engine/forward.py",
    "xai_bridge/engine/imputation.py",
]
#: The fast tests that cover the metric values (the real-model tests take minutes per mutant).
TESTS = ["tests/test_metric_values.py", "tests/test_localisation.py", "tests/test_metrics.py"]
#: The fast tests that cover the engine, and its modules' doctests.
ENGINE_TESTS = [
    "tests/test_engine.py",
    "tests/test_forward_modes.py",
    "tests/test_metric_values.py",
    "tests/test_metrics.py",
    "tests/test_protocols.py",
    *ENGINE,
]
DESELECT = "not evaluate_rows and not bad_input and not through_evaluate and not contract"


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True)


def sample(session: Path, n: int, seed: int) -> tuple[int, int]:
    """Keep ``n`` mutants drawn at random (seeded) and drop the rest from the session."""
    with sqlite3.connect(session) as db:
        jobs = sorted(row[0] for row in db.execute("SELECT job_id FROM work_items"))
        keep = set(random.Random(seed).sample(jobs, min(n, len(jobs))))
        drop = [(j,) for j in jobs if j not in keep]
        db.executemany("DELETE FROM mutation_specs WHERE job_id = ?", drop)
        db.executemany("DELETE FROM work_items WHERE job_id = ?", drop)
    return len(keep), len(jobs)


def report(session: Path) -> dict:
    with sqlite3.connect(session) as db:
        rows = list(
            db.execute(
                "SELECT s.module_path, s.operator_name, s.start_pos_row, r.worker_outcome, r.test_outcome, r.diff "
                "FROM mutation_specs s JOIN work_results r ON s.job_id = r.job_id"
            )
        )
        pending = db.execute("SELECT COUNT(*) FROM work_items").fetchone()[0] - len(rows)
    counts = {"killed": 0, "survived": 0, "timeout": 0, "incompetent": 0, "not run": pending}
    survivors = []
    for module, operator, line, worker, test, diff in rows:
        worker, test = str(worker).lower(), str(test).lower()
        if worker in ("abnormal", "exception") or test == "incompetent":
            counts["incompetent"] += 1
        elif worker == "timeout":
            counts["timeout"] += 1
        elif test == "killed":
            counts["killed"] += 1
        else:
            counts["survived"] += 1
            survivors.append(f"## {module}:{line} {operator}\n{diff}\n")
    Path(f"{session}.survivors.txt").write_text("\n".join(survivors), encoding="utf-8")
    return counts


def pytest_command(tests: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests, "-k", DESELECT]


def recheck(session: Path, tests: list[str]) -> int:
    """Apply each survivor again (``cosmic-ray apply``), run ``tests``, restore the file from git."""
    with sqlite3.connect(session) as db:
        rows = list(
            db.execute(
                "SELECT s.module_path, s.operator_name, s.occurrence, s.start_pos_row FROM mutation_specs s "
                "JOIN work_results r ON s.job_id = r.job_id WHERE lower(r.test_outcome) = 'survived'"
            )
        )
    modules = sorted({row[0] for row in rows})
    dirty = subprocess.run(["git", "status", "--porcelain", *modules], cwd=ROOT, capture_output=True, text=True)
    if dirty.stdout.strip():
        sys.exit(f"mutation: commit or stash your changes to {modules} first (they are mutated in place)")
    outcome = {}
    for module, operator, occurrence, line in rows:
        subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "apply", module, operator, str(occurrence)], cwd=ROOT)
        try:
            result = subprocess.run(pytest_command(tests), cwd=ROOT, capture_output=True, text=True)
        finally:
            subprocess.run(["git", "checkout", "--", module], cwd=ROOT, check=True)
        key = f"{module}:{line} {operator}"
        outcome[key] = "killed" if result.returncode else "survived"
        print(key, outcome[key], flush=True)
    Path(f"{session}.recheck.json").write_text(json.dumps(outcome, indent=1), encoding="utf-8")
    print(json.dumps({k: list(outcome.values()).count(k) for k in ("killed", "survived")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="+", default=MODULES, help="files to mutate (add --engine for the engine)")
    parser.add_argument("--engine", action="store_true", help="also mutate xai_bridge/engine/")
    parser.add_argument(
        "--engine-only", action="store_true", help="mutate xai_bridge/engine/ only, against ENGINE_TESTS"
    )
    parser.add_argument("--tests", nargs="+", default=TESTS, help="test files run against each mutant")
    parser.add_argument("--sample", type=int, default=0, help="run only this many mutants, drawn at random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant before it counts as timeout")
    parser.add_argument("--session", type=Path, default=ROOT / ".mutation" / "session.sqlite")
    parser.add_argument("--report-only", action="store_true", help="print the counts of an existing session")
    parser.add_argument(
        "--recheck", action="store_true", help="run the tests again against each survivor of the session (new tests)"
    )
    args = parser.parse_args(argv)
    if args.engine_only:
        args.modules = []
        args.engine = True
        if args.tests == TESTS:
            args.tests = ENGINE_TESTS
    if args.recheck:
        return recheck(args.session.resolve(), args.tests)

    session = args.session.resolve()
    if not args.report_only:
        modules = args.modules + (ENGINE if args.engine else [])
        dirty = subprocess.run(["git", "status", "--porcelain", *modules], cwd=ROOT, capture_output=True, text=True)
        if dirty.stdout.strip():
            sys.exit(f"mutation: commit or stash your changes to {modules} first (they are mutated in place)")
        session.parent.mkdir(parents=True, exist_ok=True)
        session.unlink(missing_ok=True)
        command = shlex.join(pytest_command(args.tests))
        module_list = ", ".join(json.dumps(m) for m in modules)
        config = (
            "[cosmic-ray]\n"
            f"module-path = [{module_list}]\n"
            f"timeout = {args.timeout}\n"
            "excluded-modules = []\n"
            f"test-command = {json.dumps(command)}\n"
            "[cosmic-ray.distributor]\n"
            'name = "local"\n'
        )
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(config)
        cosmic = [sys.executable, "-m", "cosmic_ray.cli"]
        run(*cosmic, "init", f.name, str(session))
        if args.sample:
            kept, total = sample(session, args.sample, args.seed)
            print(f"mutation: running {kept} of {total} mutants (seed {args.seed})", flush=True)
        run(*cosmic, "baseline", f.name)
        try:
            run(*cosmic, "exec", f.name, str(session))
        finally:
            left = subprocess.run(["git", "diff", "--stat", *modules], cwd=ROOT, capture_output=True, text=True)
            if left.stdout.strip():
                print(f"mutation: WARNING, a mutant is still applied:\n{left.stdout}", file=sys.stderr)
    counts = report(session)
    competent = counts["killed"] + counts["survived"] + counts["timeout"]
    score = (counts["killed"] + counts["timeout"]) / competent if competent else float("nan")
    print(json.dumps(counts), f"score (killed + timeout) / run = {score:.1%}")
    print(f"survivors' diffs: {session}.survivors.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
