"""Scale check for results: 10,000 trials, 1,000,000 epoch rows, 14 losses; prints seconds per step."""
from __future__ import annotations
import tempfile, time, uuid, json
from pathlib import Path
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
import results

def build(root: Path, n_trials=10_000, epochs=100, parts=50, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    losses = np.array([f"loss{i:02d}" for i in range(14)])
    loss = losses[rng.integers(0, 14, n_trials)]
    temp = 10 ** rng.uniform(-3, 0, n_trials)
    margin = rng.uniform(0, 1, n_trials)
    lr = 10 ** rng.uniform(-5, -3, n_trials)
    final = 0.6 - 0.08 * (np.log10(temp) + 1) ** 2 - 0.1 * margin + rng.normal(0, 0.01, n_trials)
    status = np.where(rng.random(n_trials) < 0.6, "stopped", "completed")
    n_ep = np.where(status == "stopped", rng.integers(1, epochs, n_trials), epochs)
    tid = np.array([f"t{i:05d}" for i in range(n_trials)])
    cfg = np.array([f"c{i // 3:05d}" for i in range(n_trials)])
    idx = np.repeat(np.arange(n_trials), n_ep)
    ep = np.concatenate([np.arange(1, k + 1) for k in n_ep])
    r1 = final[idx] * (1 - 0.9 ** ep)
    ids = {"study": "big", "trial_id": tid[idx], "config_id": cfg[idx], "loss": loss[idx], "miner": "none",
           "hp.temperature": temp[idx], "hp.margin": margin[idx], "train.lr": lr[idx],
           "train.seed": (np.arange(n_trials) % 3)[idx], "train.fold": pd.array([None] * len(idx), dtype="Int64"), "epoch": ep}
    metrics = {"recall@1": r1, "recall@2": r1 + 0.1, "recall@4": r1 + 0.2, "recall@8": r1 + 0.3,
               "precision@1": r1, "r_precision": 0.5 * r1, "map@r": 0.4 * r1, "train_loss": 1 / ep,
               "epoch_time_s": np.ones(len(idx)), "time_total_s": ep * 1.0, "timestamp": 1.7e9 + ep}
    epochs_df = pd.DataFrame({**ids, **metrics})
    d = root / "big"; (d / "results" / "epochs.parquet").mkdir(parents=True); (d / "results" / "trials.parquet").mkdir()
    for k, chunk in enumerate(np.array_split(np.arange(len(epochs_df)), parts)):
        pq.write_table(pa.Table.from_pandas(epochs_df.iloc[chunk], preserve_index=False), d / "results/epochs.parquet" / f"part-{k:05d}-{uuid.uuid4().hex}.parquet")
    last = epochs_df.groupby("trial_id").tail(1).set_index("trial_id").loc[tid]
    trials = pd.DataFrame({"study": "big", "trial_id": tid, "config_id": cfg, "loss": loss, "miner": "none",
                           "hp.temperature": temp, "hp.margin": margin, "train.lr": lr, "train.seed": np.arange(n_trials) % 3,
                           "train.fold": pd.array([None] * n_trials, dtype="Int64"), "status": status, "error": None,
                           "epochs": n_ep, "best_epoch": n_ep})
    for m in ("recall@1", "recall@2", "recall@4", "recall@8", "precision@1", "r_precision", "map@r", "train_loss"):
        trials[f"best_{m}"] = last[m].to_numpy(); trials[f"last_{m}"] = last[m].to_numpy()
    trials["wall_time_s"] = n_ep * 1.0
    for k, chunk in enumerate(np.array_split(np.arange(n_trials), parts)):
        pq.write_table(pa.Table.from_pandas(trials.iloc[chunk], preserve_index=False), d / "results/trials.parquet" / f"part-{k:05d}-{uuid.uuid4().hex}.parquet")
    (d / "study.json").write_text(json.dumps({"name": "big", "metric": "recall@1", "mode": "max",
                                              "log_scale": {l: ["hp.temperature", "train.lr"] for l in losses}}))
    return d

def timed(label, fn):
    t = time.perf_counter(); out = fn(); print(f"{label:<40s} {time.perf_counter() - t:7.2f} s", flush=True); return out

root = Path(tempfile.mkdtemp())
d = timed("build 10k trials / ~1M epoch rows", lambda: build(root))
ep = timed("load_epochs (all columns)", lambda: results.load_epochs(d))
print("   epoch rows:", len(ep))
timed("load_epochs (report columns)", lambda: results.load_epochs(d, columns=["trial_id", "loss", "epoch", "recall@1", "hp.*"]))
tr = timed("load_trials", lambda: results.load_trials(d))
timed("best_per_loss", lambda: results.best_per_loss(tr))
timed("summary", lambda: results.summary(tr))
timed("sensitivity (binned, 1 loss)", lambda: results.sensitivity(tr, loss="loss00", param="hp.temperature"))
timed("trials_in_progress (half unfinished)", lambda: results.trials_in_progress(ep, tr.iloc[::2]))
timed("importance (1 loss, ~700 trials)", lambda: results.importance(tr, loss="loss00"))
timed("plot_learning_curves (1M rows)", lambda: results.plot_learning_curves(ep, root / "lc.png", trials=tr))
timed("write_report (everything)", lambda: results.write_report(d))
import shutil; shutil.rmtree(root)
