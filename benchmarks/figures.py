"""Draw the documentation's benchmark figure from the recorded ``benchmarks/results.json``.

``python benchmarks/figures.py`` rewrites ``docs/img/bench-targets.png``: each judged target of the
record as its value over its limit (below 1 meets it), at each BLAS thread setting. The
figure is drawn from the record, never from a new timing, so it says what the record says.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    rows = [t for t in record["targets"] if t.get("value") is not None and t.get("limit")
            and not t.get("not_judged")]
    labels = [f"{t['target']} ({t['threads']} thr)" if t.get("threads") else t["target"]
              for t in rows]
    # "≥" targets (bandwidth) would read the other way; the record judges none of them here
    ratios = [t["value"] / t["limit"] for t in rows]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2), dpi=80)
    colors = ["#2a7ab0" if r <= 1 else "#c44e52" for r in ratios]
    ax.barh(range(len(rows)), ratios, color=colors)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("recorded value / limit (below 1: target met)")
    meta = record["meta"]
    ax.set_title(f"smx bench, {meta['date'][:10]}, {meta['cpu']} ({meta['cores']} cores)",
                 fontsize=9)
    fig.tight_layout()
    out = ROOT / "docs" / "img" / "bench-targets.png"
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
