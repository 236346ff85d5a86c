"""The demo's results table from several `ssenet demo --seed S --out DIR` runs: mean ± std.

    for s in 0 1 2; do ssenet demo --seed $s --out demo_s$s; done
    python benchmarks/demo_table.py demo_s0 demo_s1 demo_s2
    python benchmarks/demo_table.py demo_s0 demo_s1 demo_s2 --markdown docs/results.md

Prints every seed's figures, then a Markdown table (every scored stage the runs have, from the
stage registry: CAM, CAM+CRF, CAM+rw, with `ssenet demo --refiner irn` CAM+IRN, DeepLab on val;
classifier mAP, scale consistency), the SSENet - baseline differences and each refiner's gain
over the CAMs, each as mean ± standard deviation over the runs. The 3-seed IRNet comparison:

    for s in 0 1 2; do ssenet demo --refiner irn --seed $s --out demo_irn_s$s; done
    python benchmarks/demo_table.py demo_irn_s0 demo_irn_s1 demo_irn_s2 --refiners docs/refiners.md

With --markdown PAGE it also writes the manual's two tables (the mean
± std over the seeds and every seed's figures) into PAGE, between the lines
`<!-- demo_table: begin -->` and `<!-- demo_table: end -->`, so the results page is written by
the script that measures it, never copied by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

METHODS = ("baseline", "ssenet")
# The manual's tables (--markdown, --headline) keep these columns; the terminal's follow the runs.
STAGES = (("cam", "CAM"), ("crf", "CAM+CRF"), ("rw", "CAM+rw"), ("seg", "DeepLab (val)"))


def stage_columns(results: list[dict]) -> list[tuple[str, str]]:
    """(name, title) of the registry's scored stages that every run scored for both methods."""
    from ssenet.stages import scored_stages

    return [(s.name, s.title) for s in scored_stages()
            if all("miou" in r[m].get(s.name, {}) for r in results for m in METHODS)]  # fmt: skip


def figures(result: dict, stages=STAGES) -> dict[str, float]:
    """The flat figures of one method in one results.json."""
    out = {}
    for stage, _ in stages:
        for key in ("miou", "mfn", "mfp"):
            out[f"{stage}_{key}"] = result[stage][key]
    out["best_alpha_miou"] = result["cam_alpha_sweep"]["best_miou"]
    out["best_alpha"] = result["cam_alpha_sweep"]["best_alpha"]
    out["map"] = result["classifier"]["map"]
    out["prior_map"] = result["classifier"]["prior_map"]
    out["consistency"] = result["scale_consistency"]["0.5-2.0"]
    for scale, metrics in result["scale_sweep"].items():
        out[f"fn@{scale}"], out[f"fp@{scale}"] = metrics["mfn"], metrics["mfp"]
    return out


def seg_labels(result: dict) -> str:
    """The stage whose labels the demo's DeepLab learned from (its --refiner's)."""
    from ssenet.stages import producer, pseudo_labels

    return producer(pseudo_labels(result.get("meta", {}).get("refiner", "affinity")))


def mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


BEGIN, END = "<!-- demo_table: begin -->", "<!-- demo_table: end -->"
HEADLINE = ("<!-- demo_headline: begin -->", "<!-- demo_headline: end -->")
CONSISTENCY = ("0.5-2.0", "1.0-0.5", "1.0-2.0")


def markdown_tables(results: list[dict]) -> str:
    """The results page's tables: mean ± std over the runs, then one row per run."""
    n = len(results)
    head = (f"| {n} seeds | CAM mIoU | mFN | mFP | best-alpha mIoU | CAM+CRF | CAM+rw | mFN | mFP "
            "| DeepLab (val) | classifier mAP (val) | scale consistency "
            + " / ".join(CONSISTENCY) + " |")  # fmt: skip
    lines = [head, "|" + "---|" * 12]
    for method, name in zip(METHODS, ("baseline", "SSENet"), strict=True):
        runs = [r[method] for r in results]

        def cell(get, digits: int = 3, runs=runs) -> str:
            return mean_std([get(r) for r in runs], digits)

        cells = [
            cell(lambda r: r["cam"]["miou"]), cell(lambda r: r["cam"]["mfn"], 2),
            cell(lambda r: r["cam"]["mfp"], 2), cell(lambda r: r["cam_alpha_sweep"]["best_miou"]),
            cell(lambda r: r["crf"]["miou"]), cell(lambda r: r["rw"]["miou"]),
            cell(lambda r: r["rw"]["mfn"], 2), cell(lambda r: r["rw"]["mfp"], 2),
            cell(lambda r: r["seg"]["miou"]), cell(lambda r: r["classifier"]["map"]),
            " / ".join(f"{statistics.mean(r['scale_consistency'][p] for r in runs):.3f}"
                       for p in CONSISTENCY),
        ]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Every seed (baseline / SSENet; demo time by the demo's own clock):", "",
              "| seed | CAM | best alpha -> mIoU | CAM+CRF | CAM+rw | DeepLab (val) | mAP "
              "| consistency 0.5-2.0 | demo time |", "|" + "---|" * 9]  # fmt: skip
    for result in results:
        b, s = result["baseline"], result["ssenet"]

        def pair(get, b=b, s=s) -> str:
            return f"{get(b):.3f} / {get(s):.3f}"

        def best(r: dict) -> str:
            sweep = r["cam_alpha_sweep"]
            return f"{sweep['best_alpha']:.2f} -> {sweep['best_miou']:.3f}"

        cells = [
            str(result["meta"]["seed"]), pair(lambda r: r["cam"]["miou"]), f"{best(b)} / {best(s)}",
            pair(lambda r: r["crf"]["miou"]), pair(lambda r: r["rw"]["miou"]),
            pair(lambda r: r["seg"]["miou"]), pair(lambda r: r["classifier"]["map"]),
            pair(lambda r: r["scale_consistency"]["0.5-2.0"]), f"{result['meta']['seconds']:.0f} s",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_table(results: list[dict]) -> str:
    """The README's short table: the figures the demo exists to show, mean ± std."""
    lines = [f"| {len(results)} seeds | CAM mIoU | CAM mFP | CAM+CRF mIoU | CAM+rw mIoU "
             "| DeepLab mIoU (val) | scale consistency 0.5-2.0 |", "|" + "---|" * 7]  # fmt: skip
    for method, name in zip(METHODS, ("baseline", "SSENet"), strict=True):
        runs = [r[method] for r in results]
        cells = [mean_std([r["cam"]["miou"] for r in runs]),
                 mean_std([r["cam"]["mfp"] for r in runs], 2),
                 *(mean_std([r[stage]["miou"] for r in runs]) for stage in ("crf", "rw", "seg")),
                 f"{statistics.mean(r['scale_consistency']['0.5-2.0'] for r in runs):.3f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


REFINERS = ("<!-- refiner_table: begin -->", "<!-- refiner_table: end -->")
REFINER_HEADLINE = ("<!-- refiner_headline: begin -->", "<!-- refiner_headline: end -->")


def refiner_headline(results: list[dict]) -> str:
    """The README's short refiner table: the CAMs, each refiner the runs scored and DeepLab on
    the labels it learned from, mean ± std."""
    stages = stage_columns(results)
    refined = [(s, t) for s, t in stages if s not in ("cam", "crf", "seg")]
    learned = dict(stages).get(seg_labels(results[0]), seg_labels(results[0]))
    head = [f"{len(results)} seeds", "CAM mIoU", *(f"{t} mIoU" for _, t in refined),
            f"DeepLab on {learned} (val)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, name in zip(METHODS, ("baseline", "SSENet"), strict=True):
        runs = [r[method] for r in results]
        cells = [mean_std([r[s]["miou"] for r in runs]) for s in ("cam", *dict(refined), "seg")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def refiner_tables(results: list[dict]) -> str:
    """The refiners page's tables: per method, the CAMs, every refiner the runs scored (from the
    registry), each one's gain over the CAMs and DeepLab on the labels it learned from, mean ±
    std; then every seed's figures."""
    stages = stage_columns(results)
    refined = [(s, t) for s, t in stages if s not in ("cam", "crf", "seg")]
    learned = dict(stages).get(seg_labels(results[0]), seg_labels(results[0]))
    head = ["method", "CAM"] + [t for _, t in refined] + [f"{t} - CAM" for _, t in refined]
    head.append(f"DeepLab (val) on {learned}")
    lines = [f"{len(results)} seeds, mean ± std:", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]  # fmt: skip
    for method, name in zip(METHODS, ("baseline", "SSENet"), strict=True):
        runs = [r[method] for r in results]
        cells = [mean_std([r["cam"]["miou"] for r in runs])]
        cells += [mean_std([r[s]["miou"] for r in runs]) for s, _ in refined]
        cells += [mean_std([r[s]["miou"] - r["cam"]["miou"] for r in runs]) for s, _ in refined]
        cells.append(mean_std([r["seg"]["miou"] for r in runs]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    diffs = [mean_std([r["ssenet"][s]["miou"] - r["baseline"][s]["miou"] for r in results])
             for s, _ in (("cam", "CAM"), *refined, ("seg", ""))]  # fmt: skip
    lines.append("| SSENet - baseline | " + " | ".join(diffs[:-1]) + " | "
                 + " | ".join("" for _ in refined) + f" | {diffs[-1]} |")  # fmt: skip
    lines += ["", "Every seed (baseline / SSENet; demo time by the demo's own clock):", "",
              "| seed | CAM | " + " | ".join(t for _, t in refined)
              + f" | DeepLab on {learned} | demo time |",
              "|" + "---|" * (len(refined) + 4)]  # fmt: skip
    for result in results:
        b, s = result["baseline"], result["ssenet"]
        cells = [str(result["meta"]["seed"])]
        cells += [f"{b[k]['miou']:.3f} / {s[k]['miou']:.3f}"
                  for k in ("cam", *(x for x, _ in refined), "seg")]  # fmt: skip
        cells.append(f"{result['meta']['seconds']:.0f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(page: Path, tables: str, markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Replace what lies between the two marker lines of `page` with `tables`."""
    begin, end = markers
    text = page.read_text()
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        sys.exit(f"{page}: needs one {begin} line and one {end} line after it")
    before, rest = text.split(begin)
    after = rest.split(end)[1]
    page.write_text(f"{before}{begin}\n{tables}\n{end}{after}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="demo output directories")
    parser.add_argument("--markdown", type=Path, metavar="PAGE",
                        help="write the tables into PAGE between its demo_table lines")  # fmt: skip
    parser.add_argument("--headline", type=Path, metavar="README",
                        help="write the short table into README between its demo_headline lines")
    parser.add_argument("--refiners", type=Path, metavar="PAGE",
                        help="write the refiner comparison into PAGE between its refiner_table "
                             "lines (runs of ssenet demo --refiner irn)")  # fmt: skip
    parser.add_argument("--refiner-headline", type=Path, metavar="README",
                        help="write the short refiner table into README between its "
                             "refiner_headline lines (runs of ssenet demo --refiner irn)")
    args = parser.parse_args(argv)
    results = [json.loads((run / "results.json").read_text()) for run in args.runs]
    if args.markdown:
        write_markdown(args.markdown, markdown_tables(results))
        print(f"tables written to {args.markdown}")
    if args.headline:
        write_markdown(args.headline, headline_table(results), HEADLINE)
        print(f"headline written to {args.headline}")
    if args.refiners:
        write_markdown(args.refiners, refiner_tables(results), REFINERS)
        print(f"refiner tables written to {args.refiners}")
    if args.refiner_headline:
        write_markdown(args.refiner_headline, refiner_headline(results), REFINER_HEADLINE)
        print(f"refiner headline written to {args.refiner_headline}")
    stages = stage_columns(results)
    table = {m: [figures(r[m], stages) for r in results] for m in METHODS}
    for run, result in zip(args.runs, results, strict=True):
        print(f"{run} (seed {result['meta']['seed']}, {result['meta']['seconds']:.0f} s)")
        for method in METHODS:
            f = figures(result[method], stages)
            cells = [f"{title} {f[stage + '_miou']:.3f}" for stage, title in stages]
            cells += [f"mAP {f['map']:.3f}", f"consistency {f['consistency']:.3f}"]
            print(f"  {method:<9}" + ", ".join(cells))
    header = ["model"]
    for _, title in stages:
        header += [f"{title} mIoU", "mFN", "mFP"]
    header += ["best-alpha CAM mIoU", "classifier mAP (val)", "scale consistency 0.5-2.0"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    keys = [f"{s}_{k}" for s, _ in stages for k in ("miou", "mfn", "mfp")]
    keys += ["best_alpha_miou", "map", "consistency"]
    for method in METHODS:
        cells = [mean_std([f[k] for f in table[method]], 2 if k[-2:] in ("fn", "fp") else 3)
                 for k in keys]  # fmt: skip
        print(f"| {method} | " + " | ".join(cells) + " |")
    print()
    base, ser = table["baseline"], table["ssenet"]
    refined = [(s, t) for s, t in stages if s not in ("cam", "seg")]
    for key in ("cam_miou", "cam_mfp", "best_alpha_miou", *(f"{s}_miou" for s, _ in refined),
                "consistency"):  # fmt: skip
        diff = [s[key] - b[key] for s, b in zip(ser, base, strict=True)]
        print(f"ssenet - baseline {key}: {mean_std(diff)}")
    learned = seg_labels(results[0])
    for method in METHODS:
        runs = table[method]
        lifts = [f"{title} - CAM {mean_std([f[s + '_miou'] - f['cam_miou'] for f in runs])}"
                 for s, title in refined]  # fmt: skip
        if learned in dict(stages) and "seg" in dict(stages):
            ratio = [f["seg_miou"] / f[f"{learned}_miou"] for f in runs]
            lifts.append(f"DeepLab / {dict(stages)[learned]} {mean_std(ratio)}")
        print(f"{method}: " + "; ".join(lifts))
    scales = sorted({k[3:] for k in base[0] if k.startswith("fn@")}, key=float)
    print("\nbaseline single-scale mFN / mFP: " + ", ".join(
        f"{s}: {mean_std([f['fn@' + s] for f in base], 2)} / "
        f"{mean_std([f['fp@' + s] for f in base], 2)}" for s in scales))  # fmt: skip


if __name__ == "__main__":
    main()
