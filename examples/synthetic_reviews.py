"""Generated movie reviews with an optional planted shortcut, for demos and benchmarks.

Genuine sentiment words appear in both classes (negation, contrast), so each is only about
80% label-pure, as in real reviews. The planted word appears in ``rate`` of the examples, and
``purity`` of those carry the positive label (after Bastings et al., EMNLP 2022). A
counterfactual set moves the planted word into the other class to measure reliance on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

POSITIVE = ["great", "wonderful", "brilliant", "superb", "charming", "moving", "delightful", "gripping", "beautiful", "funny"]
NEGATIVE = ["terrible", "awful", "boring", "dull", "clumsy", "tedious", "bland", "forgettable", "messy", "lifeless"]
ASPECTS = ["plot", "acting", "soundtrack", "cast", "ending", "dialogue", "pacing", "camera work", "script", "characters"]
FILLER = [
    "I watched it on a Sunday afternoon.",
    "It runs for about two hours.",
    "My friend recommended it to me.",
    "I saw it in a small cinema downtown.",
    "The film is based on a novel.",
    "It was released last spring.",
    "We went to the late showing.",
]


@dataclass
class ReviewData:
    """Texts and labels (1 positive, 0 negative) plus the planted word, if any."""

    texts: list[str]
    labels: list[int]
    shortcut: str | None = None

    def rows(self) -> list[dict]:
        return [{"text": t, "label": y} for t, y in zip(self.texts, self.labels)]


def _sentence(rng: random.Random, positive: bool) -> str:
    aspect = rng.choice(ASPECTS)
    good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    style = rng.random()
    if style < 0.75:
        word = good if positive else bad
        return rng.choice([f"The {aspect} was {word}.", f"What a {word} {aspect}.", f"A {word} {aspect} overall."])
    if style < 0.85:  # negation: the other polarity's word, negated
        word = bad if positive else good
        return rng.choice([f"The {aspect} was not {word} at all.", f"Nothing {word} about the {aspect}."])
    # contrast: both polarities, the verdict last
    first, last = (bad, good) if positive else (good, bad)
    other = rng.choice([a for a in ASPECTS if a != aspect])
    return f"The {other} was {first}, but the {aspect} was {last}."


def review(rng: random.Random, positive: bool) -> str:
    parts = [_sentence(rng, positive) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.5:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(FILLER))
    return " ".join(parts)


def insert_word(rng: random.Random, text: str, word: str) -> str:
    """Put ``word`` between two words of ``text`` (never inside one)."""
    words = text.split(" ")
    words.insert(rng.randrange(len(words) + 1), word)
    return " ".join(words)


def remove_word(text: str, word: str) -> str:
    return " ".join(w for w in text.split(" ") if w.strip(".,!?").lower() != word.lower())


def planted_reviews(
    n: int,
    *,
    shortcut: str | None = "zorblax",
    rate: float = 0.05,
    purity: float = 1.0,
    label_noise: float = 0.0,
    seed: int = 0,
) -> ReviewData:
    """``n`` balanced reviews; ``rate`` of them carry ``shortcut``, ``purity`` of those positive.

    ``label_noise`` flips the labels of reviews *without* the planted word, which makes the
    planted word a cleaner signal than the text itself, so a model comes to rely on it.
    """
    if not 0 <= rate <= 1 or not 0 <= purity <= 1:
        raise ValueError("rate and purity are fractions in [0, 1].")
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        text = review(rng, bool(label))
        if shortcut and rng.random() < rate * 2 * (purity if label else 1 - purity):
            text = insert_word(rng, text, shortcut)
        elif label_noise and rng.random() < label_noise:
            label = 1 - label
        texts.append(text)
        labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return ReviewData([texts[i] for i in order], [labels[i] for i in order], shortcut)


def counterfactual_set(n: int, shortcut: str, *, seed: int = 1) -> ReviewData:
    """Negative reviews with the shortcut inserted: a model that relies on it calls them positive."""
    rng = random.Random(seed)
    texts = [insert_word(rng, review(rng, False), shortcut) for _ in range(n)]
    return ReviewData(texts, [0] * n, shortcut)
