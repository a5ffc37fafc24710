"""The paper's whole method, small, on the toolkit's own synthetic data (`make demo`).

    python scripts/demo.py OUT_DIR [--size demo|tiny] [--seed 0] [--noise-std S] [--ft-steps N] ...

Runs the real commands (`ingest`, `train`, `predict`, in this process) one after
another, as a user would, then prints one table of MAP@K per submission with the
held-out fine-tuning AUCs beside it, also written to OUT_DIR/results.md and
OUT_DIR/results.png:

1. synthesise train, validate and test shards (test with its truth); convert each to a store;
2. pre-train a small context-gated DBoF and a small NeXtVLAD on the train store;
3. fine-tune a context-agnostic model from each, and context-aware models (the NeXtVLAD
   as context encoder + each segment encoder), on the validate store's rated segments,
   holding one fold out (§4.1);
4. predict the test store's candidates with every model (`predict segments`);
5. build submissions (`predict topk`) for random scores, the pre-trained models without
   fine-tuning, the context-agnostic models, the context-aware models and the mixture of
   the last two; score each (`predict evaluate`) against the test truth.
6. the techniques of the teams above the paper (issue #23, docs/predictions.md,
   docs/training.md): the agnostic models and the mixture restricted to each video's most
   likely classes by a video-level prior (`predict videos` with the video-level run whose
   top classes hold the most positives of the held-out fold, `predict topk
   --video-prior`); the mixture of the same four fine-tunings run with
   weight averaging (`--swa-from`, half-way); the mixture with integer weights fit by
   `predict blend` on the fine-tuning's held-out fold (its shards converted to a store of
   their own, predicted by the four models), then applied to the test predictions.

The world is `ingest synth --classes 50 --noise-std 0.1` (the 50 most popular classes,
5 ambiguous pairs; a fifth of the default frame noise) and fine-tuning runs at lr 1e-2:
with the default noise, or at lr 2e-3, the tiny variants learn little or nothing in the
demo's CPU budget (docs/training.md, "What the demo shows"). `--noise-std`, `--pre-steps`,
`--ft-steps`, `--pre-lr`, `--ft-lr` override the size's values.

K is scaled to the data: the real test set has 1,704,348 candidates and K = 100,000
(5.87 %); the demo keeps that ratio. OUT_DIR must be new or an earlier demo's output
(it holds `.demo-output`): nothing the demo did not create is ever deleted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ingest.store.truth import read_truth

REAL_CANDIDATES, REAL_K = 1_704_348, 100_000  # the real test set and the challenge's K
MARKER = ".demo-output"
# The demo's world: frame noise 0.1 instead of `ingest synth`'s 0.5. At 0.5 the tiny model
# variants stay at chance in a few hundred CPU steps (docs/training.md, "What the demo shows").
NOISE_STD = 0.1
SIZES = {  # shards × videos per split, the world, steps and lengths of the recipes
    "demo": {"train": (4, 150), "validate": (4, 150), "test": (2, 100), "classes": 50,
             "noise_std": NOISE_STD, "pre_steps": 300, "ft_steps": 600, "pre_lr": 1e-2,
             "ft_lr": 1e-2, "batch": 32, "max_len": 20, "eval_every": 100},
    "tiny": {"train": (2, 24), "validate": (2, 30), "test": (1, 24), "classes": 20,
             "noise_std": NOISE_STD, "pre_steps": 100, "ft_steps": 150, "pre_lr": 1e-2,
             "ft_lr": 1e-2, "batch": 8, "max_len": 12, "eval_every": 50},
}
OVERRIDES = ("noise_std", "pre_steps", "ft_steps", "pre_lr", "ft_lr")  # options of the script
ENCODERS = ("dbof-tiny", "nxvlad-tiny")
CONTEXT = "nxvlad-tiny"  # the context encoder of the aware models (NeXtVLAD, as the paper's best)
# Video-level models that may give the prior of the video restriction (the runs whose
# model is a video model); the one whose top TOP_CLASSES hold the most positive (video,
# class) pairs of the held-out fold is used. Every fine-tuning held that fold out, the
# pre-trainings never saw the validate split.
PRIOR_CANDIDATES = ("pre:dbof-tiny", "pre:nxvlad-tiny", "agnostic:dbof-tiny",
                    "agnostic:nxvlad-tiny")
# Classes each test video keeps by the prior. The 3rd place kept 20 of 1000 (the classes
# holding > 97% of the positives); a demo video carries 1-5 of the world's 50 classes.
TOP_CLASSES = 5


def sh(*args: str) -> str:
    """Run one command of the toolkit (`ingest`, `train` or `predict`), echoing it, in this
    process (the click commands themselves: no interpreter start-up per command); stop the
    demo if it fails. Returns what it printed on stdout."""
    import contextlib
    import io

    import click

    print("$ " + " ".join(args), flush=True)
    group = _groups()[args[0]]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            group.main(list(args[1:]), prog_name=args[0], standalone_mode=False)
    except click.ClickException as err:
        sys.exit(f"demo: `{' '.join(args)}` failed: {err.format_message()}")
    return out.getvalue()


def _groups() -> dict:
    from ingest.cli.main import main as ingest
    from predict.cli.main import main as predict
    from trainer.cli.main import main as train

    return {"ingest": ingest, "train": train, "predict": predict}


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def prepare(out: Path) -> None:
    """A new output folder, or an earlier demo's (replaced); anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            sys.exit(f"demo: {out} exists and is not an earlier demo's output (no {MARKER}); "
                     f"choose another folder (make demo DEMO=dir)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/demo.py; `make demo` may replace this folder\n")


def data(out: Path, size: dict, seed: int) -> dict[str, Path]:
    step("1. synthesise train, validate and test shards (test + truth), convert each to a store")
    stores = {}
    for split in ("train", "validate", "test"):
        shards, videos = size[split]
        sh("ingest", "synth", str(out / "shards" / split), "--split", split, "--shards",
           str(shards), "--videos-per-shard", str(videos), "--seed", str(seed), "--classes",
           str(size["classes"]), "--noise-std", str(size["noise_std"]), "--quiet")
        stores[split] = out / "stores" / split
        sh("ingest", "convert", str(out / "shards" / split / "*.tfrecord"), "--out",
           str(stores[split]), "--quiet")
    return stores


def held_out_fold(store: Path) -> int:
    info = json.loads(sh("ingest", "info", str(store), "--json"))
    return int(min(info["folds"]))


def train_all(out: Path, stores: dict, size: dict, seed: int) -> dict[str, Path]:
    runs = {}
    common = ["--batch-size", str(size["batch"]), "--quiet", "--seed", str(seed),
              "--eval-every", str(size["eval_every"])]
    step("2. pre-train a small context-gated DBoF and a small NeXtVLAD (video level, Eq. 1)")
    for model in ENCODERS:
        runs[f"pre:{model}"] = out / "runs" / f"pretrain-{model}"
        sh("train", "pretrain", "--store", str(stores["train"]), "--model", model, "--out",
           str(runs[f"pre:{model}"]), "--steps", str(size["pre_steps"]), "--max-len",
           str(size["max_len"]), "--lr", str(size["pre_lr"]), *common)
    fold = held_out_fold(stores["validate"])
    step(f"3. fine-tune on the validate store's rated segments, fold {fold} held out (Eq. 2)")
    ft = ["--store", str(stores["validate"]), "--fold", str(fold), "--steps",
          str(size["ft_steps"]), "--lr", str(size["ft_lr"]), *common]
    for model in ENCODERS:
        runs[f"agnostic:{model}"] = out / "runs" / f"agnostic-{model}"
        sh("train", "finetune", "--kind", "agnostic", "--init", str(runs[f"pre:{model}"]),
           "--out", str(runs[f"agnostic:{model}"]), *ft)
    for model in ENCODERS:
        runs[f"aware:{model}"] = out / "runs" / f"aware-{CONTEXT}+{model}"
        sh("train", "finetune", "--kind", "aware", "--context", str(runs[f"pre:{CONTEXT}"]),
           "--segment", str(runs[f"pre:{model}"]), "--out", str(runs[f"aware:{model}"]),
           "--max-len", str(size["max_len"]), *ft)
    step(f"3b. the same four fine-tunings with weight averaging from step "
         f"{size['ft_steps'] // 2} (SWA)")
    swa = [*ft, "--swa-from", str(size["ft_steps"] // 2)]
    for model in ENCODERS:
        runs[f"swa-agnostic:{model}"] = out / "runs" / f"swa-agnostic-{model}"
        sh("train", "finetune", "--kind", "agnostic", "--init", str(runs[f"pre:{model}"]),
           "--out", str(runs[f"swa-agnostic:{model}"]), *swa)
        runs[f"swa-aware:{model}"] = out / "runs" / f"swa-aware-{CONTEXT}+{model}"
        sh("train", "finetune", "--kind", "aware", "--context", str(runs[f"pre:{CONTEXT}"]),
           "--segment", str(runs[f"pre:{model}"]), "--out", str(runs[f"swa-aware:{model}"]),
           "--max-len", str(size["max_len"]), *swa)
    return runs


def predict_all(out: Path, stores: dict, runs: dict) -> dict[str, Path]:
    step("4. predict every candidate segment of the test store with every model")
    preds = {}
    for key, run in runs.items():
        preds[key] = out / "predictions" / (run.name + ".npy")
        preds[key].parent.mkdir(parents=True, exist_ok=True)
        sh("predict", "segments", "--store", str(stores["test"]), "--model", str(run), "--out",
           str(preds[key]), "--quiet")
    preds["random"] = out / "predictions" / "random.npy"
    write_random(preds["random"], preds[next(iter(runs))], seed=0)
    return preds


def held_out_store(out: Path, fold: int) -> Path:
    """The fine-tuning's held-out fold of the validate split as a store of its own (folds
    are per shard: convert that fold's shards)."""
    from ingest.store.writer import fold_of

    shards = [str(p) for p in sorted((out / "shards" / "validate").glob("*.tfrecord"))
              if fold_of(p.name) == fold]
    store = out / "stores" / f"validate-fold{fold}"
    sh("ingest", "convert", *shards, "--out", str(store), "--quiet")
    return store


def held_out(out: Path, stores: dict) -> dict:
    """The fine-tuning's held-out fold as a store, its candidates and its scaled K."""
    fold = held_out_fold(stores["validate"])
    step(f"6. the held-out fold {fold}: the blend's weights and the restriction's prior")
    store = held_out_store(out, fold)
    n = int(json.loads(sh("ingest", "info", str(store), "--json"))["candidate_segments"])
    return {"fold": fold, "store": store, "candidates": n,
            "k": max(1, round(REAL_K * n / REAL_CANDIDATES))}


def blend_weights(out: Path, held: dict, runs: dict) -> tuple[list[int], dict]:
    """Integer weights of the mixture's four models fit by `predict blend` on their
    predictions of the held-out fold (every one of them held that fold out)."""
    preds = []
    for key in MIXTURE:
        preds.append(out / "predictions" / f"fold{held['fold']}" / (runs[key].name + ".npy"))
        preds[-1].parent.mkdir(exist_ok=True)
        sh("predict", "segments", "--store", str(held["store"]), "--model", str(runs[key]),
           "--out", str(preds[-1]), "--quiet")
    found = json.loads(sh("predict", "blend", "--truth", str(held["store"]), "--k",
                          str(held["k"]), "--json", *map(str, preds)))
    return found["weights"], {"fold": held["fold"], "k": held["k"],
                              "candidates": held["candidates"], **found}


def choose_prior(out: Path, held: dict, stores: dict, runs: dict, preds: dict) -> dict:
    """The video-level run whose top TOP_CLASSES classes hold the most positive (video,
    class) pairs of the held-out fold; its `predict videos` of the test store becomes
    `preds["prior"]`."""
    truth = read_truth(str(held["store"]))
    found = {}
    for key in PRIOR_CANDIDATES:
        path = out / "predictions" / f"fold{held['fold']}" / "videos" / f"{runs[key].name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        sh("predict", "videos", "--store", str(held["store"]), "--model", str(runs[key]),
           "--out", str(path), "--quiet")
        found[key] = prior_coverage(truth, path)["share"]
    best = max(PRIOR_CANDIDATES, key=lambda key: found[key])  # ties: the first listed
    preds["prior"] = out / "predictions" / "videos" / f"{runs[best].name}.npy"
    preds["prior"].parent.mkdir(exist_ok=True)
    sh("predict", "videos", "--store", str(stores["test"]), "--model", str(runs[best]), "--out",
       str(preds["prior"]), "--quiet")
    return {"run": runs[best].name, "held_out_shares": {runs[k].name: v for k, v in found.items()}}


def write_random(path: Path, like: Path, seed: int) -> None:
    """Uniform random scores for the same candidates (the random-ranking baseline)."""
    import polars as pl

    from predict.predictions import sidecar_path, write_predictions

    side = pl.read_parquet(sidecar_path(like))
    scores = np.random.default_rng(seed).random((side.height, 1000), np.float32)
    write_predictions(path, scores, side["video_id"], side["start_time"])


MIXTURE = tuple(f"{k}:{m}" for k in ("agnostic", "aware") for m in ENCODERS)
AGNOSTIC = tuple(f"agnostic:{m}" for m in ENCODERS)
SUBMISSIONS = (  # name, prediction keys, options of predict topk ("prior", "weights")
    ("random scores", ("random",), ()),
    ("pre-trained, no fine-tuning", tuple(f"pre:{m}" for m in ENCODERS), ()),
    ("context-agnostic", AGNOSTIC, ()),
    ("context-aware", tuple(f"aware:{m}" for m in ENCODERS), ()),
    ("mixture agnostic + aware", MIXTURE, ()),
    ("context-agnostic + video restriction", AGNOSTIC, ("prior",)),
    ("mixture + video restriction", MIXTURE, ("prior",)),
    ("mixture with SWA", tuple(f"swa-{k}" for k in MIXTURE), ()),
    ("mixture, blended weights (held-out fold)", MIXTURE, ("weights",)),
)


def topk_options(options: tuple, preds: dict, weights: list[int]) -> list[str]:
    out = []
    if "prior" in options:
        out += ["--video-prior", str(preds["prior"]), "--top-classes", str(TOP_CLASSES)]
    if "weights" in options:
        out += ["--weights", ",".join(map(str, weights))]
    return out


def csv_name(name: str) -> str:
    return name.replace(",", "").replace("(", "").replace(")", "").replace(" + ", "+") \
        .replace(" ", "-") + ".csv"


def evaluate_all(out: Path, stores: dict, preds: dict, runs: dict, k: int,
                 weights: list[int]) -> list[dict]:
    step(f"5. submissions (predict topk, K = {k}) scored by MAP@{k} (predict evaluate)")
    truth = out / "shards" / "test" / "truth.parquet"
    ambiguous = ambiguous_ids()
    rows = []
    for name, keys, options in SUBMISSIONS:
        csv = out / "submissions" / csv_name(name)
        csv.parent.mkdir(exist_ok=True)
        sh("predict", "topk", *[str(preds[k_]) for k_ in keys], "--out", str(csv), "--k", str(k),
           *topk_options(options, preds, weights))
        sh("predict", "validate", str(csv), "--k", str(k))
        result = json.loads(sh("predict", "evaluate", str(csv), "--truth", str(truth), "--k",
                               str(k), "--json"))
        per_class = result["per_class"]
        amb = [v for c, v in per_class.items() if int(c) in ambiguous]
        aucs = [final_auc(runs[k_]) for k_ in keys if k_ in runs]
        aucs = [a for a in aucs if a is not None]
        rows.append({"submission": name, "models": len(keys), "map": result["map"],
                     "map_ambiguous": float(np.mean(amb)) if amb else float("nan"),
                     "classes": result["classes"], "ambiguous_classes": len(amb),
                     "auc": float(np.mean(aucs)) if aucs else None, "csv": str(csv)})
    return rows


def ambiguous_ids() -> set[int]:
    """Vocabulary ids of the synthetic world's ambiguous classes (docs/synth.md)."""
    from ingest.synth import make_world
    from ingest.vocab import segment_class_ids

    partner = make_world(0).partner
    return {int(i) for i in segment_class_ids()[partner >= 0]}


def final_auc(run: Path) -> float | None:
    """The last held-out AUC of a fine-tuning run (of its weight average, with SWA)."""
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    return evals[-1].get("swa_auc", evals[-1].get("auc")) if evals else None


def prior_coverage(truth, prior: Path) -> dict:
    """Share of the positive (video, class) pairs of `truth` (a truth table) that the
    prior's top TOP_CLASSES of their video keep (the 3rd place's top 20 of 1000 kept over
    97%)."""
    import polars as pl

    scores = np.load(prior, mmap_mode="r")
    videos = pl.read_parquet(prior.with_suffix(".videos.parquet"))["video_id"].to_list()
    row = {v: i for i, v in enumerate(videos)}
    truth = truth.filter(pl.col("score") > 0.5)
    pairs = set(zip(truth["video_id"].to_list(), truth["class_index"].to_list()))
    top = np.argsort(-scores.astype(np.int32), axis=1, kind="stable")[:, :TOP_CLASSES]
    kept = sum(int(c) in top[row[v]] for v, c in pairs)
    return {"top_classes": TOP_CLASSES, "positive_pairs": len(pairs),
            "kept": kept, "share": kept / max(len(pairs), 1)}


def report(out: Path, rows: list[dict], k: int, seconds: float, notes: dict) -> str:
    head = (f"| submission | models | MAP@{k} | MAP@{k}, ambiguous classes | "
            "held-out AUC (fine-tuning) |\n| --- | ---: | ---: | ---: | ---: |\n")
    lines = [f"| {r['submission']} | {r['models']} | {r['map']:.4f} | {r['map_ambiguous']:.4f} "
             f"| {_number(r['auc'])} |" for r in rows]
    text = head + "\n".join(lines) + "\n"
    blend, cover, prior = notes["blend"], notes["prior_coverage"], notes["prior"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in prior["held_out_shares"].items())
    text += (f"\nVideo restriction: each test video keeps its {cover['top_classes']} best "
             f"classes by the video-level prediction (`predict videos`) of {prior['run']}, "
             f"chosen on the held-out fold (share of its positive (video, class) pairs kept: "
             f"{shares}); on the test they hold {cover['kept']} of the "
             f"{cover['positive_pairs']} positive pairs ({cover['share']:.1%}). Blended weights "
             f"{','.join(map(str, blend['weights']))} (agnostic dbof, agnostic nxvlad, aware "
             f"dbof, aware nxvlad), fit by `predict blend` on the held-out validate fold "
             f"{blend['fold']} ({blend['candidates']} candidates, MAP@{blend['k']} "
             f"{blend['map']:.4f} against {blend['map_equal']:.4f} with equal weights).\n")
    (out / "results.md").write_text(
        f"# Demo results\n\nK = {k} (the real K = 100,000 scaled by test candidates); "
        f"ambiguous classes: the synthetic world's partner pairs (docs/synth.md); "
        f"AUC: the last held-out evaluation of each fine-tuned model, averaged.\n\n" + text
        + f"\nWhole demo: {seconds:.0f} s.\n")
    (out / "results.json").write_text(json.dumps({"rows": rows, **notes}, indent=1))
    chart(out / "results.png", rows, k)
    return text


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def chart(path: Path, rows: list[dict], k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["map"] for r in rows], 0.4, label=f"MAP@{k}, all classes")
    ax.bar(x + 0.2, [r["map_ambiguous"] for r in rows], 0.4, label=f"MAP@{k}, ambiguous")
    ax.set_xticks(x, [r["submission"].replace(", ", ",\n").replace(" + ", " +\n") for r in rows],
                  fontsize=8)
    ax.set_ylabel("MAP")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    for name in OVERRIDES:
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(SIZES["demo"][name]),
                            help=f"override the size's {name}")
    args = parser.parse_args()
    t0 = time.time()
    prepare(args.out)
    size = {**SIZES[args.size], **{k: getattr(args, k) for k in OVERRIDES
                                   if getattr(args, k) is not None}}
    stores = data(args.out, size, args.seed)
    runs = train_all(args.out, stores, size, args.seed)
    preds = predict_all(args.out, stores, runs)
    held = held_out(args.out, stores)
    weights, blend = blend_weights(args.out, held, runs)
    prior = choose_prior(args.out, held, stores, runs, preds)
    n_candidates = int(json.loads(sh("ingest", "info", str(stores["test"]), "--json"))[
        "candidate_segments"])
    k = max(1, round(REAL_K * n_candidates / REAL_CANDIDATES))
    rows = evaluate_all(args.out, stores, preds, runs, k, weights)
    truth = read_truth(str(args.out / "shards" / "test" / "truth.parquet"))
    notes = {"blend": blend, "prior": prior,
             "prior_coverage": prior_coverage(truth, preds["prior"])}
    table = report(args.out, rows, k, time.time() - t0, notes)
    print("\n" + table)
    print(f"outputs in {args.out}/: stores/, runs/ (each with curves.png), predictions/, "
          f"submissions/, results.md, results.png ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
