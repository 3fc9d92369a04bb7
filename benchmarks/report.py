"""The printed table of a benchmark run: one line per figure, its baseline and their ratio."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def rows(results: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(figure, value, baseline, ratio) for the headline figures of each benchmark present."""
    out: list[tuple[str, Any, Any, Any]] = []
    enc = results.get("encoders")
    if enc and "tiny_cpu" in enc:
        for modality, per in enc["tiny_cpu"].items():
            for batch, rate in per.items():
                out.append((f"encoders tiny cpu {modality} batch {batch} (items/s)", rate, per.get("1"),
                            enc["batching_gain_vs_batch1"][modality].get(batch)))
    idx = results.get("index")
    if idx and "sizes" in idx:
        for n, size in idx["sizes"].items():
            base = size["baseline"]
            out.append((f"index {int(n):,} exact bare FAISS p50/p99 (ms)",
                        f"{base['single_query']['p50_ms']}/{base['single_query']['p99_ms']}", None, None))
            for kind, fig in size["kinds"].items():
                if "skipped" in fig:
                    out.append((f"index {int(n):,} {kind}", "skipped", None, None))
                    continue
                out.append((f"index {int(n):,} {kind} p50 (ms) vs bare FAISS call", fig["single_query"]["p50_ms"],
                            fig["bare_faiss_single_query"]["p50_ms"], fig["p50_vs_bare"]))
                out.append((f"index {int(n):,} {kind} p99 (ms)", fig["single_query"]["p99_ms"],
                            fig["bare_faiss_single_query"]["p99_ms"], None))
                out.append((f"index {int(n):,} {kind} batch QPS vs exact", fig["batch_qps"], base["batch_qps"],
                            fig["batch_qps_vs_exact_baseline"]))
                out.append((f"index {int(n):,} {kind} recall@10 / build s / MB", fig["recall_at_10"],
                            f"{fig['build_s']} s", f"{fig['memory_mb']} MB"))
    svc = results.get("service")
    if svc and "grpc" in svc:
        for c, fig in svc["grpc"]["search_by_vector"].items():
            out.append((f"gRPC search-by-vector c{c} QPS vs in-process store", fig["qps"],
                        svc["baseline"]["store_search"][c]["qps"], svc["ratios"][f"vector_qps_vs_store_c{c}"]))
            out.append((f"gRPC search-by-vector c{c} QPS vs bare FAISS", fig["qps"],
                        svc["baseline"]["bare_faiss"][c]["qps"], svc["ratios"][f"vector_qps_vs_bare_faiss_c{c}"]))
            out.append((f"gRPC search-by-vector c{c} p50/p99 (ms)", f"{fig['p50_ms']}/{fig['p99_ms']}",
                        f"{svc['baseline']['store_search'][c]['p50_ms']}/{svc['baseline']['store_search'][c]['p99_ms']}", None))
        for c, fig in svc["grpc"]["search_by_text"].items():
            out.append((f"gRPC search-by-text c{c} QPS vs in-process", fig["qps"], svc["baseline"]["text_search"][c]["qps"],
                        svc["ratios"][f"text_qps_vs_in_process_c{c}"]))
            out.append((f"gRPC search-by-text c{c} p50/p99 (ms)", f"{fig['p50_ms']}/{fig['p99_ms']}", None, None))
        x = svc["xray_embed_c16"]
        out.append(("gRPC X-ray embed c16 QPS: batching on vs off", x["micro_batching_on"]["qps"],
                    x["micro_batching_off"]["qps"], x["speedup_on_vs_off"]))
    ing = results.get("ingest")
    if ing and "phantom" in ing:
        p, v = ing["phantom"], ing["vectors"]
        out.append(("ingest phantom cases/s: service vs in-process", p["through_service_cases_per_s"],
                    p["baseline_in_process_cases_per_s"], p["ratio"]))
        out.append(("ingest vectors/s: service vs direct store", v["through_service_vectors_per_s"],
                    v["baseline_direct_store_vectors_per_s"], v["ratio"]))
    sc = results.get("scale")
    if sc and "vectors" in sc:
        out.append((f"scale: ingest {sc['vectors']:,} vectors (s)", sc["ingest_s"], None, None))
        out.append(("scale: server peak RSS (MB)", sc["server_peak_rss_mb"], None, None))
        out.append(("scale: restart to SERVING (s)", sc["restart_to_serving_s"], None, None))
        s2, b = sc["search_after_restart"], sc["baseline_in_process"]
        out.append(("scale: gRPC search c1 p99 (ms), first queries after restart, vs in-process", s2["p99_ms"],
                    b["p99_ms"], sc["p99_vs_in_process"]))
        if "search_steady" in sc:
            st = sc["search_steady"]
            out.append((f"scale: gRPC search c1 p50/p99 (ms), {st['queries']} new queries after those",
                        f"{st['p50_ms']}/{st['p99_ms']}", None, None))
        out.append(("scale: recall@10 (gRPC / in-process)", s2["recall_at_10"], b["recall_at_10"], None))
    return out


def table(results: dict[str, Any]) -> str:
    lines = rows(results)
    width = max([len(r[0]) for r in lines] + [10])
    header = f"{'figure':<{width}}  {'value':>14}  {'baseline':>14}  {'ratio':>8}"
    body = [f"{name:<{width}}  {_fmt(v):>14}  {_fmt(b):>14}  {_fmt(r):>8}" for name, v, b, r in lines]
    machine = results.get("machine", {})
    head = (f"tribind benchmarks ({results.get('mode')}) {machine.get('date_utc')} on {machine.get('cpu')}, "
            f"{machine.get('cores_usable')} cores, load {machine.get('load_average_start')} -> {machine.get('load_average_end')}")
    return "\n".join([head, header, "-" * len(header), *body])


def markdown(results: dict[str, Any]) -> str:
    """The same rows as a Markdown table, for the README's Performance section."""
    lines = ["| figure | value | baseline | ratio |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {_fmt(v)} | {_fmt(b)} | {_fmt(r)} |" for name, v, b, r in rows(results)]
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.report RESULTS.json  (prints the Markdown table)")
    with open(sys.argv[1]) as handle:
        print(markdown(json.load(handle)))
