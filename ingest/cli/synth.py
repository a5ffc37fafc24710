"""`ingest synth OUT_DIR ...`: write synthetic YouTube-8M frame-level shards (docs/synth.md)."""
from __future__ import annotations

import click

from ingest.synth.shards import MAX_FRAMES, MAX_NOISE_STD, SPLITS, SynthConfig, write_synth

_DEFAULT = SynthConfig()  # the option defaults are the config's, stated once there


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(SPLITS), default=_DEFAULT.split, show_default=True,
              help="train: labels; validate: labels + rated segments; test: neither, "
                   "ratings go to OUT_DIR/truth.parquet.")
@click.option("--shards", type=click.IntRange(min=1), default=_DEFAULT.shards,
              show_default=True)
@click.option("--videos-per-shard", type=click.IntRange(min=0),
              default=_DEFAULT.videos_per_shard, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=_DEFAULT.seed, show_default=True,
              help="Draws the videos; shard k of a split depends on (seed, split, k) only.")
@click.option("--world-seed", type=click.IntRange(min=0), default=_DEFAULT.world_seed,
              show_default=True,
              help="Fixes what the classes look like; use the same one for every split.")
@click.option("--min-frames", type=click.IntRange(1, MAX_FRAMES), default=_DEFAULT.min_frames,
              show_default=True)
@click.option("--max-frames", type=click.IntRange(1, MAX_FRAMES), default=_DEFAULT.max_frames,
              show_default=True)
@click.option("--edge-cases", is_flag=True,
              help="Mix in 1-frame (5%), exactly 300-frame (5%) and 2..39-frame (10%) videos.")
@click.option("--beyond-end-rate", type=click.FloatRange(0.0, 1.0),
              default=_DEFAULT.beyond_end_rate, show_default=True,
              help="validate: share of rated videos given one extra rating that starts "
                   "past the video's end, as a few real records have.")
@click.option("--classes", type=click.IntRange(2, 1000), default=_DEFAULT.classes,
              show_default=True,
              help="Use only the N most popular segment classes (more examples per class "
                   "in a small dataset; the demo uses 50).")
@click.option("--noise-std", type=click.FloatRange(0.0, MAX_NOISE_STD),
              default=_DEFAULT.noise_std, show_default=True,
              help="Frame noise per value (the planted signal's strength against it; the "
                   "demo uses a cleaner world than the default, docs/synth.md).")
@click.option("--short-ids", is_flag=True,
              help="4-character video ids as the real dataset's (unique within the call "
                   "and split) instead of X0_00003_00017.")
@click.option("--overwrite", is_flag=True,
              help="Replace shards (and truth.parquet) of the same names already in OUT_DIR; "
                   "without it, the command refuses to write over them.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out_dir: str, split: str, shards: int, videos_per_shard: int, seed: int,
          world_seed: int, min_frames: int, max_frames: int, edge_cases: bool,
          beyond_end_rate: float, classes: int, noise_std: float, short_ids: bool,
          overwrite: bool, quiet: bool) -> None:
    """Write synthetic frame-level shards OUT_DIR/<split>-NNNNN-of-MMMMM.tfrecord."""
    config = SynthConfig(out_dir=out_dir, split=split, shards=shards,
                         videos_per_shard=videos_per_shard, seed=seed, world_seed=world_seed,
                         min_frames=min_frames, max_frames=max_frames, edge_cases=edge_cases,
                         beyond_end_rate=beyond_end_rate, classes=classes,
                         noise_std=noise_std, short_ids=short_ids)
    for path in write_synth(config, progress=not quiet, overwrite=overwrite):
        click.echo(str(path))
