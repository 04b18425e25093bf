"""Training statistics for shortcut discovery: which labels each word was seen with.

``TrainingStatistics`` counts, per distinct training example, its label and its words (and the
phrases, runs of 2 to ``PHRASE_MAX_WORDS`` neighbouring words, that discovery asks about), from texts or from input ids decoded back to
words the way the attributions split them (:mod:`.words`). The integrations feed it what the
framework already holds (batches the callback sees, the train dataset, Flair's corpus) and the
monitor owns and checkpoints it.

Bounded and deterministic without touching any global random stream: an example is kept when
a hash of its content falls below ``rate`` (``max_examples`` over the expected number of
examples, when known), up to ``max_examples``; the same example seen again (a later epoch, a
replayed batch after a resume) is not counted twice. Under ``torch.distributed`` each rank
counts the batches it sees and :meth:`gathered` sums the ranks (a collective).
"""

from __future__ import annotations

import hashlib
import logging
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any, Hashable, Iterable, Sequence

from explain_callbacks.attribution.validation import positive_int, versioned_state
from explain_callbacks.attribution.words import PHRASE_MAX_WORDS, IdsToWords, adjacent_phrases, is_word, text_spans

# Where a word or phrase sits in its training texts: "start" when it begins within the first
# ``EDGE_WORDS`` words, "end" when it ends within the last ``EDGE_WORDS`` (a source tag in front,
# a signature at the end); what discovery's insertion test copies.
EDGE_WORDS = 2

log = logging.getLogger(__name__)

DEFAULT_MAX_EXAMPLES = 20_000
_HASH_SPACE = float(2**64)


def as_label(value: Any) -> Hashable:
    """One class label as a plain hashable value (a tensor or numpy scalar unwrapped)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, (list, dict, set, tuple)) or hasattr(value, "ndim"):
        raise ValueError(
            f"training labels must be single class labels, got {type(value).__name__} "
            f"({value!r:.60}); multi-label data is not supported."
        )
    return value


def _digest(parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _as_rows(value: Any) -> list[Any]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value)


class TrainingStatistics:
    """Label counts per word over a bounded, deduplicated sample of training examples.

    ``phrases``: the phrases (``"a b"``, ``"sent from my iphone"``: 2 to ``PHRASE_MAX_WORDS``
    neighbouring words) to count as well; discovery asks about the phrases its probes contain.
    ``None`` counts every adjacent pair (longer phrases are too many to count them all).
    """

    def __init__(self, max_examples: int = DEFAULT_MAX_EXAMPLES, phrases: Iterable[str] | None = (), seed: int = 0):
        positive_int(max_examples, "max_examples", "TrainingStatistics")
        self.max_examples = max_examples
        self.phrases = None if phrases is None else set(phrases)
        self.seed = seed
        self.rate = 1.0
        self.epoch: int | None = None  # the epoch being gathered from batches
        self.complete = False  # a whole pass (or the dataset) is in: stop looking at batches
        self.n_examples = 0
        self.label_counts: Counter = Counter()
        self.word_labels: dict[str, Counter] = defaultdict(Counter)
        self.phrase_labels: dict[str, Counter] = defaultdict(Counter)
        # examples in which a word or counted phrase sits at the start / at the end (EDGE_WORDS)
        self.position_counts: dict[str, Counter] = defaultdict(Counter)
        # the text's first / last 2 to PHRASE_MAX_WORDS marks with punctuation among them
        # ("from zorblax :"), keyed "start:<marks>" / "end:<marks>": a tag is words and punctuation
        self.edge_labels: dict[str, Counter] = defaultdict(Counter)
        self._seen: set[int] = set()
        self._base: dict[str, Any] | None = None  # counts every rank holds alike (texts, a checkpoint)
        self._ids_to_words: IdsToWords | None = None
        self._warned: set[str] = set()

    @property
    def has_data(self) -> bool:
        return self.n_examples > 0

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """The tokenizer whose input ids :meth:`observe` will be given."""
        if tokenizer is not None and self._ids_to_words is None:
            self._ids_to_words = IdsToWords(tokenizer)

    def expect(self, n_examples: int | None) -> None:
        """How many examples one pass will show (when known): sample ``max_examples`` of them evenly."""
        if n_examples and n_examples > self.max_examples and self.n_examples == 0:
            self.rate = self.max_examples / float(n_examples)

    # ------------------------------------------------------------------ counting
    def observe(
        self,
        texts: Sequence[str] | None = None,
        input_ids: Any = None,
        labels: Any = None,
        epoch: int | None = None,
        distinct: bool = True,
    ) -> int:
        """Count a batch of examples (``texts`` or ``input_ids``, with ``labels``); returns how
        many were new. With ``epoch``, only the first epoch given is counted (one pass is a sample
        of the data; later passes repeat it). ``distinct``: an example (content and label) seen
        before is not counted again; ``False`` for a list of texts given once."""
        if self.complete or labels is None:
            return 0
        if epoch is not None:
            if self.epoch is None:
                self.epoch = int(epoch)
            elif int(epoch) != self.epoch:
                self.complete = True
                return 0
        if (texts is None) == (input_ids is None):
            raise ValueError("TrainingStatistics.observe: give texts= or input_ids= (one of them), with labels=.")
        rows = _as_rows(texts if texts is not None else input_ids)
        label_rows = _as_rows(labels)
        if len(rows) != len(label_rows):
            raise ValueError(
                f"TrainingStatistics.observe: {len(rows)} examples but {len(label_rows)} labels; give one label each."
            )
        if texts is None and self._ids_to_words is None:
            raise ValueError("TrainingStatistics.observe: input_ids need a tokenizer (bind_tokenizer) to find words.")
        kept: list[tuple[Any, Hashable]] = []
        for row, label in zip(rows, label_rows):
            if self.n_examples + len(kept) >= self.max_examples:
                break
            try:
                label = as_label(label)
            except ValueError as err:
                self._warn_once("label", "training statistics skip labels that are not one class each: %s", err)
                continue
            if isinstance(label, float) and not label.is_integer() or label == -100:
                continue  # regression targets, or an ignored example
            if texts is None:
                row = self._ids_to_words.strip_padding(row)
            elif not isinstance(row, str):
                raise ValueError(f"TrainingStatistics.observe: a training text is a {type(row).__name__}, not a string.")
            digest = _digest((self.seed, row, label))
            if (distinct and digest in self._seen) or digest / _HASH_SPACE >= self.rate:
                continue
            if distinct:
                self._seen.add(digest)
            kept.append((row, label))
        if texts is None:  # one batched decode of the examples kept
            decoded = self._ids_to_words.texts([row for row, _ in kept]) if kept else []
        else:
            decoded = [row for row, _ in kept]
        for text, (_, label) in zip(decoded, kept):
            self._count(text_spans(text), label)
        return len(kept)

    def _count(self, marks: list[str], label: Hashable) -> None:
        """One example: its words and punctuation marks (:func:`text_spans`) and label."""
        words = [m for m in marks if is_word(m)]
        self.n_examples += 1
        self.label_counts[label] += 1
        for word in set(words):
            self.word_labels[word][label] += 1
        if self.phrases is None:
            phrases = set(adjacent_phrases(words, 2))
        else:
            phrases = set(adjacent_phrases(words)) & self.phrases
        for phrase in phrases:
            self.phrase_labels[phrase][label] += 1
        units = {w: w for w in words} | {p: p for p in phrases}
        head, tail = words[:EDGE_WORDS + PHRASE_MAX_WORDS - 1], words[-(EDGE_WORDS + PHRASE_MAX_WORDS - 1):]
        start = {" ".join(head[i:i + n]) for i in range(EDGE_WORDS) for n in range(1, PHRASE_MAX_WORDS + 1)
                 if i + n <= len(head)}
        end = {" ".join(tail[len(tail) - i - n:len(tail) - i]) for i in range(EDGE_WORDS)
               for n in range(1, PHRASE_MAX_WORDS + 1) if i + n <= len(tail)}
        for unit in start & units.keys():
            self.position_counts[unit]["start"] += 1
        for unit in end & units.keys():
            self.position_counts[unit]["end"] += 1
        for n in range(2, PHRASE_MAX_WORDS + 1):
            for side, gram in (("start", marks[:n]), ("end", marks[-n:])):
                if len(gram) == n and not all(is_word(m) for m in gram) and any(is_word(m) for m in gram):
                    self.edge_labels[f"{side}:{' '.join(gram)}"][label] += 1

    def add_phrases(self, phrases: Iterable[str]) -> None:
        """Count these phrases too from now on (examples already counted are not revisited)."""
        if self.phrases is not None:
            self.phrases.update(phrases)

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)

    # ------------------------------------------------------------------ reading
    def counts(self, word: str) -> Counter | None:
        """Label counts of a word or a phrase (``"a b"``), or ``None`` if never seen."""
        table = self.phrase_labels if " " in word else self.word_labels
        found = table.get(word.lower())
        return found if found else None

    def words(self) -> Iterable[str]:
        return self.word_labels.keys()

    def position(self, unit: str) -> dict[str, float]:
        """Shares of the examples holding a word or counted phrase in which it sits at the start
        and at the end (``EDGE_WORDS``); zeros when unknown."""
        counts = self.counts(unit)
        total = sum(counts.values()) if counts else 0
        at = self.position_counts.get(unit.lower()) or {}
        return {side: (at.get(side, 0) / total if total else 0.0) for side in ("start", "end")}

    # ------------------------------------------------------------------ ranks and checkpoints
    def _counts_state(self, min_count: int = 1) -> dict[str, Any]:
        def table(counts: dict[str, Counter]) -> dict[str, list[list[Any]]]:
            return {w: [[label, n] for label, n in c.items()] for w, c in counts.items() if sum(c.values()) >= min_count}

        words, phrases = table(self.word_labels), table(self.phrase_labels)
        return {
            "n_examples": self.n_examples,
            "label_counts": [[label, n] for label, n in self.label_counts.items()],
            "word_labels": words,
            "pair_labels": phrases,  # the checkpoint's name since phrases were pairs
            "position_counts": {w: [[side, n] for side, n in sorted(c.items())] for w, c in self.position_counts.items()
                                if w in words or w in phrases},
            "edge_labels": table(self.edge_labels),
        }

    def _add_counts(self, state: dict[str, Any]) -> None:
        self.n_examples += int(state.get("n_examples", 0))
        for label, n in state.get("label_counts", []):
            self.label_counts[as_label(label)] += int(n)
        for key, table in (("word_labels", self.word_labels), ("pair_labels", self.phrase_labels),
                           ("edge_labels", self.edge_labels)):
            for word, pairs in state.get(key, {}).items():
                for label, n in pairs:
                    table[word][as_label(label)] += int(n)
        for unit, sides in state.get("position_counts", {}).items():
            for side, n in sides:
                self.position_counts[unit][str(side)] += int(n)

    def gathered(self) -> "TrainingStatistics":
        """The statistics of every rank together (``self`` outside ``torch.distributed``).
        Collective: every rank must call it."""
        import torch

        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        local = self._counts_state()
        if self._base is not None:  # held alike by every rank: counted once, below
            local = _subtract(local, self._base)
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        merged = TrainingStatistics(self.max_examples, self.phrases, self.seed)
        merged.epoch, merged.complete, merged.rate = self.epoch, self.complete, self.rate
        if self._base is not None:
            merged._add_counts(self._base)
        for part in parts:
            merged._add_counts(part)
        merged._base = merged._counts_state()
        return merged

    def mark_replicated(self) -> None:
        """What is counted so far is held alike by every rank (all read the same texts)."""
        self._base = self._counts_state()

    def state_dict(self, min_count: int = 1) -> dict[str, Any]:
        """The counts (labels as given: JSON types to go into a JSON checkpoint). Once complete,
        words seen fewer than ``min_count`` times are left out (they can never be candidates)
        and so is the record of examples seen."""
        state = {"version": 2, "max_examples": self.max_examples, "rate": self.rate, "epoch": self.epoch,
                 "complete": self.complete, **self._counts_state(min_count if self.complete else 1),
                 "pairs": None if self.phrases is None else sorted(self.phrases)}
        if not self.complete:
            state["seen"] = sorted(self._seen)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (replacing what is counted); ``{}`` keeps the current counts."""
        if not state:
            return
        versioned_state(state, 2, "TrainingStatistics")
        self.__init__(int(state.get("max_examples", self.max_examples)), state.get("pairs"), self.seed)
        self.rate, self.epoch = float(state.get("rate", 1.0)), state.get("epoch")
        self.complete = bool(state.get("complete", False))
        self._add_counts(state)
        self._seen = {int(d) for d in state.get("seen", [])}
        self.mark_replicated()


def _subtract(state: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """``state`` minus ``base`` (both ``_counts_state`` mappings; ``base`` is contained in ``state``)."""
    def table(key: str) -> dict[str, list[list[Any]]]:
        out = {}
        for word, pairs in state.get(key, {}).items():
            before = {repr(label): n for label, n in base.get(key, {}).get(word, [])}
            rest = [[label, n - before.get(repr(label), 0)] for label, n in pairs]
            rest = [p for p in rest if p[1] > 0]
            if rest:
                out[word] = rest
        return out

    before = {repr(label): n for label, n in base.get("label_counts", [])}
    return {
        "n_examples": state["n_examples"] - int(base.get("n_examples", 0)),
        "label_counts": [[l, n - before.get(repr(l), 0)] for l, n in state["label_counts"] if n - before.get(repr(l), 0) > 0],
        "word_labels": table("word_labels"),
        "pair_labels": table("pair_labels"),
        "position_counts": table("position_counts") if "position_counts" in state else {},
        "edge_labels": table("edge_labels") if "edge_labels" in state else {},
    }


LABEL_KEYS = ("labels", "label")


def batch_examples(batch: Any) -> tuple[Any, Any, Any] | None:
    """``(texts, input_ids, labels)`` of a training batch as a framework hands it to a callback:
    a mapping (``dict``, ``BatchEncoding``) with ``input_ids`` (or a ``text`` list) and
    ``labels``/``label``, or a tuple whose first 2-D integer tensor is the input ids and whose
    last 1-D integer tensor of the same length the labels. ``None`` when there is no such pair."""
    import torch

    if isinstance(batch, Mapping):
        labels = next((batch[k] for k in LABEL_KEYS if k in batch and batch[k] is not None), None)
        texts = batch.get("text")
        texts = texts if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts) else None
        ids = batch.get("input_ids") if texts is None else None
        if labels is None or (texts is None and ids is None):
            return None
        return texts, ids, labels
    if isinstance(batch, (list, tuple)):
        tensors = [x for x in batch if isinstance(x, torch.Tensor) and not x.is_floating_point()]
        ids = next((t for t in tensors if t.dim() == 2), None)
        if ids is None:
            return None
        labels = [t for t in tensors if t.dim() == 1 and len(t) == len(ids)]
        return (None, ids, labels[-1]) if labels else None
    return None


def dataset_examples(
    dataset: Any, text_key: str = "text", max_rows: int = DEFAULT_MAX_EXAMPLES, seed: int = 0
) -> tuple[Any, Any, Any] | None:
    """``(texts, input_ids, labels)`` of a training dataset, read without iterating a
    DataLoader or its sampler: the columns of a Hugging Face ``Dataset`` (``text_key`` when
    present, else ``input_ids``), else the rows of a map-style dataset (a list, a torch
    ``Dataset``) holding mappings. Above ``max_rows`` rows an even sample is read, chosen by a
    private ``random.Random(seed)``. Rows are read under a guard: a dataset whose indexing
    draws from a global random stream (augmentation) has the streams put back and is not
    read. ``None`` when the dataset holds no texts or ids with labels."""
    if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        return None
    n = len(dataset)
    if n == 0:
        return None
    indices = sorted(random.Random(seed).sample(range(n), max_rows)) if n > max_rows else None
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list) and hasattr(dataset, "select"):  # a Hugging Face Dataset: read columns
        label_key = next((k for k in LABEL_KEYS if k in columns), None)
        data_key = text_key if text_key in columns else "input_ids" if "input_ids" in columns else None
        if label_key is None or data_key is None:
            return None
        part = dataset.select(indices) if indices is not None else dataset
        values, labels = part[data_key], part[label_key]
        return (values, None, labels) if data_key == text_key else (None, values, labels)
    with _random_streams_guard() as guard:
        rows = [dataset[i] for i in (indices if indices is not None else range(n))]
    if guard.drew:
        log.warning(
            "training statistics: indexing the train dataset draws random numbers (augmentation?), so it "
            "is not read (the random streams are put back); statistics come from batches, or pass "
            "training_texts= / call monitor.observe()."
        )
        return None
    if not all(isinstance(r, Mapping) for r in rows):
        return None
    first = rows[0]
    label_key = next((k for k in LABEL_KEYS if k in first), None)
    if label_key is None:
        return None
    labels = [r[label_key] for r in rows]
    if isinstance(first.get(text_key), str):
        return [r[text_key] for r in rows], None, labels
    if "input_ids" in first:
        return None, [r["input_ids"] for r in rows], labels
    return None


class _random_streams_guard:
    """Records the global random streams (Python, NumPy, torch CPU and CUDA) on entry; on exit,
    ``drew`` says whether any moved, and they are put back."""

    def __enter__(self) -> "_random_streams_guard":
        import torch

        self.drew = False
        self._python = random.getstate()
        self._numpy = sys.modules["numpy"].random.get_state() if "numpy" in sys.modules else None
        self._torch = torch.get_rng_state()
        self._cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if random.getstate() != self._python:
            self.drew = True
            random.setstate(self._python)
        if self._numpy is not None:
            np_random = sys.modules["numpy"].random
            now = np_random.get_state()
            if any(not _same(a, b) for a, b in zip(now, self._numpy)):
                self.drew = True
                np_random.set_state(self._numpy)
        if not torch.equal(torch.get_rng_state(), self._torch):
            self.drew = True
            torch.set_rng_state(self._torch)
        if self._cuda is not None:
            now = torch.cuda.get_rng_state_all()
            if any(not torch.equal(a, b) for a, b in zip(now, self._cuda)):
                self.drew = True
                torch.cuda.set_rng_state_all(self._cuda)


def _same(a: Any, b: Any) -> bool:
    if hasattr(a, "shape"):
        return bool((a == b).all())
    return a == b
