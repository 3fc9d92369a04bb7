"""`make bench` / `python -m benchmarks.run [--quick]`: every benchmark, a table, and results JSON.

Writes `benchmarks/results/latest.json` (one key per benchmark: encoders, index, service, ingest,
scale; plus the machine) and a dated copy next to it. Figures vary from run to run on shared
machines: compare the ratios measured in one run, and quote the machine, date and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.config import CONFIGS, BenchConfig

RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARKS = ("encoders", "index", "service", "ingest", "scale")


def run_one(name: str, config: BenchConfig, work_dir: Path | None) -> dict[str, Any]:
    if name == "encoders":
        from benchmarks import encoders_bench
        return encoders_bench.run(config)
    if name == "index":
        from benchmarks import index_bench
        return index_bench.run(config)
    if name == "service":
        from benchmarks import service_bench
        return service_bench.run(config, work_dir)
    if name == "ingest":
        from benchmarks import ingest_bench
        return ingest_bench.run(config, work_dir)
    from benchmarks import scale_bench
    return scale_bench.run(config, work_dir)


def run(config: BenchConfig, only: tuple[str, ...] = BENCHMARKS, out: Path | None = RESULTS / "latest.json",
        work_dir: Path | None = None, log=print) -> dict[str, Any]:
    """Run the named benchmarks; a failing one records its error and the others still run."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    results: dict[str, Any] = {"mode": config.name, "machine": machine.describe()}
    for name in only:
        log(f"[bench] {name} ({config.name}) ...")
        started = time.monotonic()
        try:
            results[name] = run_one(name, config, work_dir)
        except Exception as exc:  # noqa: BLE001 - reported in the JSON; the run goes on
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=8)}
        results[name]["mode"] = config.name
        results[name]["measured_utc"] = machine.describe_time()
        results[name]["seconds"] = round(time.monotonic() - started, 1)
        results[name]["load_average_after"] = machine.load_average()
        log(f"[bench] {name} done in {results[name]['seconds']} s (load {results[name]['load_average_after']})")
    results["machine"]["load_average_end"] = machine.load_average()
    results["machine"]["total_s"] = round(time.monotonic() - results["machine"].pop("started_monotonic"), 1)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(merged(results, out, only), indent=1, sort_keys=False)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
        if out.name == "latest.json":
            stamp = results["machine"]["date_utc"].replace(":", "").replace("-", "")
            (out.parent / f"{config.name}-{stamp}.json").write_text(text)
    return results


def merged(results: dict[str, Any], out: Path, only: tuple[str, ...]) -> dict[str, Any]:
    """With --only, the benchmarks not re-run keep their last figures from `out` (each has its own
    `measured_utc` and `machine_of_run`), so latest.json always holds one entry per benchmark."""
    if set(only) >= set(BENCHMARKS) or not out.is_file():
        return results
    try:
        previous = json.loads(out.read_text())
    except ValueError:
        return results
    kept = {}
    for name in BENCHMARKS:
        if name not in only and name in previous:
            kept[name] = {**previous[name], "machine_of_run": previous[name].get("machine_of_run", previous.get("machine"))}
    return {**results, **kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes and repetitions (<= 3 min)")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="results JSON (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=None, help="where temporary libraries go (default: the system temp)")
    args = parser.parse_args(argv)
    only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    unknown = [x for x in only if x not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    config = CONFIGS["quick" if args.quick else "full"]
    results = run(config, only, args.out, args.work_dir, log=lambda m: print(m, file=sys.stderr, flush=True))
    from benchmarks.report import table

    print(table(results))
    print(f"\nresults: {args.out}")
    failed = [name for name in only if "error" in results[name]]
    if failed:
        print(f"failed: {', '.join(failed)} (see the JSON for the error)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
