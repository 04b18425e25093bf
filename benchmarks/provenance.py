"""Where a word's pull toward a class comes from: the pretrained prior, or training alone.

Research signals for telling a learned artefact (a token that became label-predictive only
through the training set) from a genuine class word when both are equally label-pure in the
training data (issue 14, purity 0.8), measured by ``shortcut_signals.py``. None met its target,
so the package does not use them and they live here, not in ``explain_callbacks``. Each is a pure
function of what a monitor can cheaply keep; none runs a training step or touches a random stream:

- **prior association** (:func:`prior_margins`): how far a word's *initial* vector (before any
  training step) already sits nearer the class words of its training label than those of the
  other labels. A genuine class word of a pretrained model has that prior ("great" is near
  "wonderful"); a made-up token has none. A model trained from scratch has no prior for any
  word (random embeddings), so there the signal is noise by construction.
- **neighbourhood shift** (:func:`neighbourhood_shift`, after Chew et al., EACL Findings 2024,
  "Understanding and Mitigating Spurious Correlations in Text Classification with Neighborhood
  Analysis"): the share of a word's k nearest neighbours that are class words of its label, now
  against at set-up, and the share of its neighbours that changed. A spurious token moves into
  the class words' neighbourhood during fine-tuning; a genuine class word was there already.
- **early importance** (:func:`early_importance`, after Du et al., NAACL 2021, "Towards
  Interpreting and Mitigating Shortcut Learning Behavior of NLU Models"): shortcut features are
  picked up in the first few iterations, before the model's accuracy moves; here a word's
  attribution dominance at the checks before validation accuracy rose halfway to its best.

Vectors come from the input embedding matrix (:func:`embedding_copy`, mean of a word's
sub-word rows: :func:`word_vectors`) or, as Chew et al. do, from the encoder's last layer with
the word alone as input (:func:`contextual_word_vectors`). Class words are the words most
associated with each label by local mutual information (Du et al.'s measure of the head of the
long-tailed distribution): :func:`class_words`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Hashable

import torch

from explain_callbacks.attribution.words import is_word
from explain_callbacks.detection.statistics import TrainingStatistics


def embedding_copy(model: Any, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """A CPU copy of the model's input embedding matrix (vocabulary x width), detached, in
    ``dtype`` (half precision by default: the cosines need no more, and it halves the memory:
    all-MiniLM-L6-v2 30522 x 384 is 23.4 MB, BERT-base 30522 x 768 is 46.9 MB)."""
    get = getattr(model, "get_input_embeddings", None)
    layer = get() if callable(get) else None
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"embedding_copy: {type(model).__name__} has no 2-D input embedding matrix "
            "(get_input_embeddings().weight); pass a transformers model."
        )
    return weight.detach().to("cpu", dtype=dtype, copy=True)


def word_pieces(tokenizer: Any, word: str) -> list[int]:
    """The sub-word ids of ``word`` alone, without special tokens."""
    return list(tokenizer(word, add_special_tokens=False)["input_ids"])


def word_vectors(matrix: torch.Tensor, tokenizer: Any, words: Sequence[str]) -> torch.Tensor:
    """One row per word: the mean of its sub-word pieces' rows of ``matrix`` (float32)."""
    if matrix.dim() != 2:
        raise ValueError(f"word_vectors: matrix must be vocabulary x width, got shape {tuple(matrix.shape)}.")
    rows = []
    for word in words:
        ids = word_pieces(tokenizer, word)
        if not ids:
            raise ValueError(f"word_vectors: the tokenizer gives no pieces for {word!r}; leave it out.")
        if max(ids) >= matrix.shape[0]:
            raise ValueError(
                f"word_vectors: {word!r} has piece id {max(ids)} beyond the matrix's {matrix.shape[0]} rows; "
                "give the embedding matrix of this tokenizer's model."
            )
        rows.append(matrix[ids].float().mean(0))
    return torch.stack(rows) if rows else torch.zeros(0, matrix.shape[1])


def contextual_word_vectors(model: Any, tokenizer: Any, words: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """One row per word: the last hidden layer, averaged over the word's pieces, with the word
    alone as the input (``[CLS] word [SEP]``), as Chew et al. take a token's representation.
    Runs in eval mode without gradients and restores the model's mode."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(words), batch_size):
                chunk = list(words[start:start + batch_size])
                enc = tokenizer(chunk, padding=True, return_tensors="pt", return_special_tokens_mask=True)
                special = enc.pop("special_tokens_mask").bool()
                enc = {k: v.to(device) for k, v in enc.items()}
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1].float().cpu()
                keep = (~special & enc["attention_mask"].cpu().bool()).unsqueeze(-1).float()
                out.append((hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0))
    finally:
        model.train(was_training)
    width = out[0].shape[1] if out else 0
    return torch.cat(out) if out else torch.zeros(0, width)


def class_words(
    statistics: TrainingStatistics, words: Sequence[str] | None = None, per_class: int = 10, min_count: int = 5
) -> dict[Hashable, list[str]]:
    """Per label, the ``per_class`` words most associated with it in training, by local mutual
    information ``count(w, y) * log(p(y | w) / p(y))`` (only positive associations; ``words``
    restricts the choice, e.g. to words with vectors)."""
    n = statistics.n_examples
    if n == 0:
        raise ValueError("class_words: the training statistics are empty; gather some examples first.")
    allowed = None if words is None else set(words)
    scored: dict[Hashable, list[tuple[float, str]]] = {label: [] for label in statistics.label_counts}
    for word, counts in statistics.word_labels.items():
        total = sum(counts.values())
        if total < min_count or not is_word(word) or (allowed is not None and word not in allowed):
            continue
        for label, count in counts.items():
            prior = statistics.label_counts[label] / n
            lmi = count * math.log((count / total) / prior)
            if lmi > 0:
                scored[label].append((lmi, word))
    return {label: [w for _, w in sorted(rows, key=lambda r: (-r[0], r[1]))[:per_class]] for label, rows in scored.items()}


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.float() / vectors.float().norm(dim=-1, keepdim=True).clamp(min=1e-12)


def prior_margins(
    vectors: torch.Tensor, words: Sequence[str], labels: Mapping[str, Hashable], classes: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    """Per word of ``labels``: mean cosine of its vector to the class words of its label minus
    the mean cosine to the class words of the other labels (the word itself left out).
    ``vectors`` has one row per entry of ``words``; class words without a row are skipped."""
    index = {w: i for i, w in enumerate(words)}
    if len(index) != vectors.shape[0]:
        raise ValueError(f"prior_margins: {vectors.shape[0]} vectors for {len(index)} distinct words.")
    unit = _unit(vectors)
    out = {}
    for word, label in labels.items():
        if word not in index:
            continue
        own, other = [], []
        for cls, members in classes.items():
            rows = [index[m] for m in members if m in index and m != word]
            if not rows:
                continue
            mean = float((unit[rows] @ unit[index[word]]).mean())
            (own if cls == label else other).append(mean)
        if own and other:
            out[word] = own[0] - sum(other) / len(other)
    return out


def novelty(margins: Mapping[str, float], reference: Sequence[float], z_full: float = 2.0) -> dict[str, float]:
    """1 for a word with no prior pull toward its label, 0 for one ``z_full`` standard
    deviations of ``reference`` (the margins of every word considered) above 0 or more."""
    values = list(reference)
    if len(values) < 2:
        raise ValueError("novelty: need the margins of at least two reference words to know their spread.")
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) or 1e-12
    return {w: 1.0 - min(1.0, max(0.0, m / spread / z_full)) for w, m in margins.items()}


def neighbours(vectors: torch.Tensor, words: Sequence[str], word: str, k: int) -> list[str]:
    """The ``k`` words of ``words`` nearest to ``word`` by cosine (itself left out)."""
    index = {w: i for i, w in enumerate(words)}
    if word not in index:
        raise KeyError(f"neighbours: {word!r} is not among the words given.")
    unit = _unit(vectors)
    similarity = unit @ unit[index[word]]
    similarity[index[word]] = -math.inf
    order = torch.argsort(similarity, descending=True, stable=True)[:k]
    return [words[i] for i in order.tolist()]


def neighbourhood_shift(
    before: torch.Tensor, after: torch.Tensor, words: Sequence[str], word: str, members: Sequence[str], k: int = 10
) -> dict[str, float]:
    """How ``word``'s neighbourhood among ``words`` changed from ``before`` to ``after`` (rows
    aligned with ``words``): the share of its k neighbours in ``members`` (its label's class
    words, itself left out) before and after, their difference ``gain``, and ``changed``, the
    share of neighbours now that were not neighbours before (Chew et al.'s neighbour change)."""
    if before.shape[0] != len(words) or after.shape[0] != len(words):
        raise ValueError(
            f"neighbourhood_shift: {len(words)} words but {before.shape[0]} vectors before and {after.shape[0]} after."
        )
    k = min(k, len(words) - 1)
    if k < 1:
        raise ValueError("neighbourhood_shift: need at least two words to have a neighbour.")
    group = set(members) - {word}
    old, new = neighbours(before, words, word, k), neighbours(after, words, word, k)
    share_before = sum(w in group for w in old) / k
    share_after = sum(w in group for w in new) / k
    return {"class_share_before": share_before, "class_share_after": share_after,
            "gain": share_after - share_before, "changed": 1.0 - len(set(old) & set(new)) / k}


def early_importance(history: Sequence[tuple[float, Mapping[str, float]]], half: float = 0.5) -> dict[str, float]:
    """Per word, its mean dominance over the early checks: the checks, from the first on, before
    validation accuracy first rose ``half`` of the way from the first check's to its best (only
    the first check when none was better). ``history``: ``(validation accuracy, {word: dominance})`` per
    check, in order; a word absent from a check counts 0 there."""
    if not history:
        return {}
    accuracies = [acc for acc, _ in history]
    bar = accuracies[0] + half * (max(accuracies) - accuracies[0])
    early = [history[0][1]]
    for acc, dominance in history[1:]:
        if acc >= bar or bar <= accuracies[0]:  # risen, or never rose above the first check
            break
        early.append(dominance)
    words = {w for _, dominance in history for w in dominance}
    return {w: sum(d.get(w, 0.0) for d in early) / len(early) for w in words}
