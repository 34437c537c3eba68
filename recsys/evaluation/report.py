"""The evaluation report: a JSON document for machines, a self-contained HTML page for people.

The HTML page has no external reference: plots are PNGs drawn with matplotlib's Agg backend and
inlined as base64, the style is inline CSS. Files are written to a temporary name, then renamed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEADLINE_ESTIMATOR = "snips"
_LABELS = {"naive": "naive (logged CTR)", "replay": "Replay", "ips": "IPS", "snips": "SNIPS", "dr": "DR"}


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:+.1f}%"


def headline(report: dict, estimator: str = HEADLINE_ESTIMATOR) -> str:
    """One sentence: the policy's estimated lift over the baseline, its interval and its support."""
    noun = "clicks" if report["options"]["reward"] == "clicked" else "orders"
    pol, base = report["policy"]["name"], report["baseline"]["name"]
    lift = report["lifts"].get(estimator)
    stat = report["policy"]["estimates"][estimator]["overall"]
    if lift is None or math.isnan(lift["lift"]):
        return f"Policy {pol} could not be compared with baseline {base}: no matched events."
    more = "more" if lift["lift"] >= 0 else "fewer"
    ci = (f"95% CI {_pct(lift['low'])}..{_pct(lift['high'])}, " if not math.isnan(lift["low"]) else "")
    text = (f"Policy {pol} is estimated to earn {abs(100 * lift['lift']):.1f}% {more} {noun} than baseline "
            f"{base} ({ci}{_LABELS[estimator]}, {stat['matched']:,} matched events).")
    if stat["warning"]:
        text += " Warning: too few matched events or too small an effective sample size to trust."
    return text


def write_json(report: dict, path: Path) -> Path:
    """Strict JSON: NaN (an estimate without support) is written as null."""
    return _atomic_write(path, json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False))


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: object) -> object:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def _atomic_write(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- plots
def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _err(stats: list[dict]) -> tuple[list[float], list[list[float]]]:
    y = [s["estimate"] for s in stats]
    lo = [max(0.0, s["estimate"] - s["low"]) if not math.isnan(s["low"]) else 0.0 for s in stats]
    hi = [max(0.0, s["high"] - s["estimate"]) if not math.isnan(s["high"]) else 0.0 for s in stats]
    return y, [lo, hi]


def _grouped(ax: plt.Axes, labels: list[str], series: dict[str, list[dict]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, stats) in enumerate(series.items()):
        y, err = _err(stats)
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, y, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)


def plot_estimators(report: dict) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(report["policy"]["estimates"])
    _grouped(ax, [_LABELS[n] for n in names], {
        side_name: [report[side]["estimates"][n]["overall"] for n in names]
        for side, side_name in (("policy", report["policy"]["name"]), ("baseline", report["baseline"]["name"]))
    }, f"{report['options']['reward']} per slot")
    ax.set_title("Estimated reward per slot, 95% bootstrap intervals")
    return _png(fig)


def plot_positions(report: dict, estimator: str = HEADLINE_ESTIMATOR) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    pos = report["policy"]["estimates"][estimator]["positions"]
    base = report["baseline"]["estimates"][estimator]["positions"]
    labels = [p["label"] for p in pos]
    base = (base + [dict(estimate=math.nan, low=math.nan, high=math.nan)] * len(pos))[: len(pos)]
    _grouped(ax, labels, {report["policy"]["name"]: pos, report["baseline"]["name"]: base}, "reward per slot")
    ax.set_xlabel("position (0 = top)")
    ax.set_title(f"{_LABELS[estimator]} per position")
    return _png(fig)


def plot_slice(report: dict, column: str) -> str:
    rows = [s for s in report["slices"] if s["column"] == column]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    est = rows[0]["policy"]["estimator"] if rows else HEADLINE_ESTIMATOR
    _grouped(ax, [r["value"] for r in rows], {
        report["policy"]["name"]: [r["policy"]["overall"] for r in rows],
        report["baseline"]["name"]: [r["baseline"]["overall"] for r in rows],
    }, "reward per slot")
    ax.set_title(f"{_LABELS[est]} by {column}")
    return _png(fig)


def plot_lifts(report: dict) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    names = [n for n in report["lifts"]]
    y = [100 * report["lifts"][n]["lift"] for n in names]
    lo = [100 * (report["lifts"][n]["lift"] - report["lifts"][n]["low"]) for n in names]
    hi = [100 * (report["lifts"][n]["high"] - report["lifts"][n]["lift"]) for n in names]
    err = [[0 if math.isnan(v) else max(0, v) for v in lo], [0 if math.isnan(v) else max(0, v) for v in hi]]
    ax.errorbar(y, range(len(names)), xerr=err, fmt="o", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(names)), [_LABELS[n] for n in names])
    ax.set_xlabel(f"lift of {report['policy']['name']} over {report['baseline']['name']} (%)")
    ax.set_title("Paired lift, 95% bootstrap intervals")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


# ---------------------------------------------------------------- html
_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}.headline{font-size:1.15rem;background:#f3f6fa;border-left:4px solid #3a6ea5;padding:.8rem}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}.warn{color:#a33}img{max-width:100%}"""


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}"
    if isinstance(x, int):
        return f"{x:,}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def render_html(report: dict) -> str:
    """A self-contained page: headline, tables and inline plots."""
    parts = [f"<h1>Offline evaluation: {html.escape(report['policy']['name'])} vs "
             f"{html.escape(report['baseline']['name'])}</h1>",
             f"<p class=headline>{html.escape(report['headline'])}</p>"]
    log = report["log"]
    parts.append(f"<p>Log <code>{html.escape(str(log['path']))}</code>: {log['rows']:,} slots, "
                 f"{log['requests']:,} requests, surface {html.escape(log['surface'])}, reward "
                 f"{html.escape(report['options']['reward'])}, {report['options']['n_bootstrap']} bootstrap "
                 f"resamples, weight clip {report['options']['clip']}.</p>")
    if report["warnings"]:
        parts.append("<ul class=warn>" + "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"]) + "</ul>")
    rows = []
    for side in ("policy", "baseline"):
        for name, est in report[side]["estimates"].items():
            o = est["overall"]
            rows.append([report[side]["name"], _LABELS[name], o["estimate"], o["low"], o["high"], o["matched"],
                         o["ess"], "yes" if o["warning"] else ""])
    parts += ["<h2>Estimates</h2>", _table(["policy", "estimator", "estimate", "95% low", "95% high",
                                           "matched", "ESS", "warning"], rows),
              _img(plot_estimators(report), "estimates per estimator")]
    if report["lifts"]:
        parts += ["<h2>Lift</h2>", _table(["estimator", "lift", "95% low", "95% high", "difference"], [
            [_LABELS[n], v["lift"], v["low"], v["high"], v["difference"]] for n, v in report["lifts"].items()]),
            _img(plot_lifts(report), "lift")]
    parts += ["<h2>Per position</h2>", _img(plot_positions(report), "per position")]
    for column in dict.fromkeys(s["column"] for s in report["slices"]):
        parts += [f"<h2>By {html.escape(column)}</h2>", _img(plot_slice(report, column), f"by {column}")]
    exp_rows = [[report[s]["name"], *[report[s]["exposure"].get(k, float("nan"))
                                      for k in ("coverage", "gini", "new_restaurant_share")]]
                for s in ("policy", "baseline")]
    parts += ["<h2>Exposure</h2>", _table(["policy", "catalog coverage", "Gini of exposure",
                                          "share on new restaurants"], exp_rows)]
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>Offline evaluation</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def write_html(report: dict, path: Path) -> Path:
    return _atomic_write(path, render_html(report))


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """``report.json`` and ``report.html`` in ``out_dir``."""
    out_dir = Path(out_dir)
    return write_json(report, out_dir / "report.json"), write_html(report, out_dir / "report.html")


# ---------------------------------------------------------------- validation against the truth
def plot_agreement(rows: list[dict]) -> str:
    """Estimated vs true reward per policy, with intervals, on the diagonal when they agree."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    truth = [r["truth"] for r in rows]
    y, err = _err([{"estimate": r["estimate"], "low": r["low"], "high": r["high"]} for r in rows])
    ax.errorbar(truth, y, yerr=err, fmt="o", capsize=3)
    for r in rows:
        ax.annotate(r["policy"], (r["truth"], r["estimate"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    lo, hi = min(truth + y) * 0.9, max(truth + y) * 1.1
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlabel("true CTR (simulator)")
    ax.set_ylabel("SNIPS estimate (offline)")
    ax.set_title("Offline estimate vs true CTR")
    ax.grid(alpha=0.3)
    return _png(fig)


def render_truth_html(summary: dict) -> str:
    """The page of a validation run: coverage per estimator, the agreement table and plot."""
    parts = ["<h1>Offline evaluation vs the simulator's ground truth</h1>",
             f"<p class=headline>{html.escape(summary['headline'])}</p>",
             f"<p>{html.escape(summary['setup'])}</p>", "<h2>Coverage of the true CTR of the target policy</h2>"]
    cov_head = ["check", "estimator", "seeds", "coverage", "mean error", "mean SE", "SE of mean error",
                "mean width", "max width", "width bound"]
    parts.append(_table(cov_head, [[c["check"], c["estimator"], c["seeds"], c["coverage"], c["mean_error"],
                                    c["mean_se"], c["se_of_mean_error"], c["mean_width"], c["max_width"],
                                    c["width_bound"]] for c in summary["coverage"]]))
    agree = summary["agreement"]
    parts += [f"<h2>Offline/online agreement (seed {agree['example_seed']})</h2>",
              (f"<p>Spearman rank correlation, SNIPS estimate vs true CTR: {agree['example_spearman']:.3f} in "
               f"this world; over {agree['seeds']} worlds: mean {agree['mean_spearman']:.3f}, min "
               f"{agree['min_spearman']:.3f}, share of worlds &ge; 0.9: {agree['share_at_least_0_9']:.2f}; "
               f"ranking by the mean over worlds: {agree['pooled_spearman']:.3f}.</p>"),
              _table(["policy", "true CTR", "SNIPS", "95% low", "95% high", "covered", "rank (truth)",
                      "rank (SNIPS)", "ESS"],
                     [[r["policy"], r["truth"], r["estimate"], r["low"], r["high"], "yes" if r["covered"] else "no",
                       r["rank_truth"], r["rank_estimate"], r["ess"]] for r in agree["example"]]),
              _img(plot_agreement(agree["example"]), "estimate vs truth"),
              "<h3>Mean over worlds</h3>",
              _table(["policy", "mean true CTR", "mean SNIPS", "coverage"],
                     [[r["policy"], r["truth"], r["estimate"], r["coverage"]] for r in agree["pooled"]])]
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>Evaluation vs truth</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def write_truth_report(summary: dict, json_path: Path, html_path: Path) -> tuple[Path, Path]:
    """The validation run's JSON and self-contained HTML page."""
    return write_json(summary, json_path), _atomic_write(html_path, render_truth_html(summary))
