"""Export to the ARPA back-off format, so KenLM, SRILM and friends can load the same model.

An ARPA file holds, per n-gram, log10 p (the full interpolated probability) and, for n-grams that are
contexts, log10 of the back-off weight: exactly the form NGramLM stores, so the export only renames.

Reset mode (sentences): the eos id plays two roles, named as those tools expect: `</s>` when it is
predicted (last word of an n-gram) and `<s>` when it is the start context (first word of an n-gram of
order >= 2, where it can only mean a sentence start). The unigram `<s>` gets the usual -99 (never
predicted) and carries the start context's back-off weight. Stream mode: eos is an ordinary word
written under its token's name.

Add-k has no back-off form (an unseen word's probability after a context does not factor through
shorter contexts), so it cannot be exported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmbench.errors import ConfigError

NEVER = -99.0  # log10 probability ARPA tools use for <s>
LOG10_E = 1.0 / np.log(10.0)


def write_arpa(model, path: str | Path, tokens: list[str]) -> None:
    if model.smoothing == "addk":
        raise ConfigError("add-k smoothing has no back-off form, so it cannot be written as ARPA")
    if len(tokens) != model.vocab_size:
        raise ConfigError(f"{len(tokens)} token names given for a vocabulary of {model.vocab_size}")
    names = np.array(tokens, dtype=object)
    start_name = end_name = names[model.eos_id]
    if model.reset_at_eos:
        start_name, end_name = "<s>", "</s>"
        if {"<s>", "</s>"} & set(tokens[: model.eos_id] + tokens[model.eos_id + 1 :]):
            raise ConfigError("a vocabulary word is named <s> or </s>, which ARPA reserves")
    sections = []
    words = np.arange(model.vocab_size, dtype=np.int64)[:, None]  # word ids of each n-gram
    for k in range(1, model.order + 1):
        if k > 1:
            keys = model.keys[k - 1]
            words = np.column_stack([words[keys // model.vocab_size], keys % model.vocab_size])
        columns = [names[words[:, i]] for i in range(k)]
        if model.reset_at_eos:
            columns[-1] = np.where(words[:, -1] == model.eos_id, end_name, columns[-1])
            if k > 1:
                columns[0] = np.where(words[:, 0] == model.eos_id, start_name, columns[0])
        text = [" ".join(col) for col in zip(*columns)] if k > 1 else list(columns[0])
        log_probs = model.log_probs[k - 1] * LOG10_E
        backoffs = model.log_backoffs[k - 1] * LOG10_E if k < model.order else None
        lines = [
            _line(log_probs[i], text[i], None if backoffs is None else backoffs[i]) for i in range(len(text))
        ]
        if k == 1 and model.reset_at_eos:
            # The eos unigram's back-off weight is the start context's: eos is never a context as `</s>`.
            lines[model.eos_id] = _line(log_probs[model.eos_id], end_name, None)
            lines.append(_line(NEVER, start_name, None if backoffs is None else backoffs[model.eos_id]))
        sections.append(lines)
    with open(path, "w", encoding="utf-8") as out:
        out.write("\n\\data\\\n")
        for k, lines in enumerate(sections, start=1):
            out.write(f"ngram {k}={len(lines)}\n")
        for k, lines in enumerate(sections, start=1):
            out.write(f"\n\\{k}-grams:\n")
            out.write("\n".join(lines))
            out.write("\n")
        out.write("\n\\end\\\n")


def _line(log_prob: float, text: str, backoff: float | None) -> str:
    # Back-off weights of 1 (log 0) are left out, as ARPA allows; 10 significant digits keep the
    # file faithful to float64 well beyond the float32 that KenLM loads it into.
    if backoff is None or backoff == 0.0:
        return f"{log_prob:.10g}\t{text}"
    return f"{log_prob:.10g}\t{text}\t{backoff:.10g}"
