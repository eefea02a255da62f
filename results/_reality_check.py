"""The reality check's table: per loss, each test metric's mean and 95% interval over its final runs, both ways.

"A Metric Learning Reality Check" (Musgrave, Belongie, Lim, ECCV 2020) reports each loss by the mean over its
final runs (its best configuration, retrained with new seeds) of P@1, R-Precision and MAP@R on the test classes,
twice: "concatenated", the metrics of the concatenated embeddings of the fold models, and "separated", each fold
model's metrics averaged. The interval is Student's t (results._summary.confidence_half_width).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from results._load import PathsLike, load_final
from results._summary import confidence_half_width
from results.study_dir import EVALUATIONS

__all__ = ["REALITY_CHECK_METRICS", "reality_check_table"]

# The paper's three metrics, in its column order.
REALITY_CHECK_METRICS = ("precision@1", "r_precision", "map@r")


def reality_check_table(table: pd.DataFrame | PathsLike, *, metrics: Sequence[str] = REALITY_CHECK_METRICS,
                        confidence: float = 0.95) -> pd.DataFrame:
    """Per loss (per study and loss for several studies): `n` final runs, then for each evaluation and metric
    `<evaluation>.<metric>` (the mean) and `<evaluation>.<metric>_ci` (the half-width of the interval), sorted
    by concatenated MAP@R (else the first metric), best first.

    `table`: a final table as `results.load_final` gives it, or study directories (their final.parquet is read).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence=}")
    final = table if isinstance(table, pd.DataFrame) else load_final(table)
    columns = [f"{evaluation}.{metric}" for evaluation in EVALUATIONS for metric in metrics]
    missing = [c for c in ("loss", *columns) if c not in final.columns]
    if missing:
        raise ValueError(f"column(s) {', '.join(map(repr, missing))} are not in the final table; expected the "
                         f"final.parquet of a reality-check study")
    keys = ["study", "loss"] if "study" in final.columns and final["study"].nunique() > 1 else ["loss"]
    grouped = final.groupby(keys, sort=False)
    out = grouped.size().rename("n").to_frame()
    for column in columns:
        values = grouped[column].agg(["mean", "std", "count"])
        out[column] = values["mean"]
        out[f"{column}_ci"] = confidence_half_width(values["std"], values["count"], confidence)
    order = f"concatenated.{'map@r' if 'map@r' in metrics else metrics[0]}"
    out = out.iloc[np.argsort(-out[order].to_numpy(dtype=float), kind="stable")]
    return out.reset_index()
