"""`make bench`: run every `bench/bench_*.py` module's `main()` and summarise.

Usage: python -m bench [NAME ...]   (NAME filters, e.g. `verify` runs bench_verify only)

Each benchmark runs with default arguments and prints its own report; the runner
exits non-zero when any benchmark returns non-zero or raises.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path


def discover(names: list[str]) -> list[str]:
    """Module names of the benchmarks to run, in file-name order."""
    modules = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    return [m for m in modules if not names or m.removeprefix("bench_") in names or m in names]


def run(module_name: str) -> int:
    """Import `bench.<module_name>` and call its `main()` with no arguments of its own."""
    saved = sys.argv
    sys.argv = [f"bench/{module_name}.py"]
    try:
        result = importlib.import_module(f"bench.{module_name}").main()
        return int(result or 0)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # one broken benchmark must not hide the others' numbers
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved


def main(names: list[str]) -> int:
    outcomes: dict[str, tuple[int, float]] = {}
    for module_name in discover(names):
        print(f"== {module_name}", flush=True)
        started = time.monotonic()
        code = run(module_name)
        outcomes[module_name] = (code, time.monotonic() - started)
    print("== summary")
    for module_name, (code, seconds) in outcomes.items():
        print(f"{module_name:<24} {'ok' if code == 0 else f'FAILED ({code})':<12} {seconds:8.1f}s")
    return 0 if outcomes and all(code == 0 for code, _ in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
