"""Scoring speed (the evaluator's `model.score`) of each neural family, in tokens per second.

    python benchmarks/eval_throughput.py [--families lstm transformer] [--vocab 10000] [--tokens 20000]
        [--batch-size 10] [--repeats 5]

Models are 2 layers of width 200 (the Transformer: 4 heads, d_ff 800, context 35, default stride
17), untrained (speed does not depend on the weights), scoring `--tokens` random ids with an
end-of-sentence every 20 tokens. One untimed call builds the graphs; the table gives the median of
`--repeats` timed calls and their spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FAMILIES = ("rnn", "gru", "lstm", "transformer")


def build(family: str, vocab: int):
    from lmbench.models.recurrent import RecurrentLM
    from lmbench.models.transformer import TransformerLM

    if family == "transformer":
        model = TransformerLM(vocab, 0, n_layer=2, n_head=4, d_model=200, d_ff=800, dropout=0.0, context=35)
    else:
        model = RecurrentLM(vocab, 0, cell=family, embedding_dim=200, hidden_size=200, num_layers=2)
    model.build_for_inference()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=["lstm", "transformer"])
    parser.add_argument("--vocab", nargs="+", type=int, default=[10_000])
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import keras

    keras.utils.set_random_seed(0)
    print(f"{'family':12s} {'|V|':>7s} {'tokens/s':>10s} {'(min-max)':>19s}")
    for vocab in args.vocab:
        ids = np.random.default_rng(0).integers(1, vocab, args.tokens)
        ids[19::20] = 0  # eos
        for family in args.families:
            model = build(family, vocab)
            model.score(ids[:2000], batch_size=args.batch_size)  # trace
            rates = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model.score(ids, batch_size=args.batch_size)
                rates.append(args.tokens / (time.perf_counter() - start))
            print(f"{family:12s} {vocab:7d} {statistics.median(rates):10,.0f} "
                  f"{f'({min(rates):,.0f}-{max(rates):,.0f})':>19s}")


if __name__ == "__main__":
    main()
