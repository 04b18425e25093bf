"""The fixed probe set every check attributes."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


class ProbeError(ValueError):
    """A probe set that cannot be used, with the probe and the fix named."""


@dataclass(frozen=True)
class Probe:
    """One text to attribute, with an optional gold ``label`` and second segment."""

    text: str
    id: str
    label: Any = None
    text_pair: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _check_text(value: Any, where: str, field_name: str = "text") -> str:
    if not isinstance(value, str):
        raise ProbeError(
            f"{where}: {field_name} must be a string, got {type(value).__name__} ({value!r:.60}). "
            "Convert it with str() or drop the probe."
        )
    if not value.strip():
        raise ProbeError(f"{where}: {field_name} is empty or only whitespace; give it some text.")
    return value


class ProbeSet(Sequence[Probe]):
    """An ordered, validated, fingerprinted set of probes.

    Build it from a list of strings or dicts (``text`` plus optional ``label``, ``text_pair``,
    ``id``), from a ``.jsonl`` / ``.csv`` / ``.txt`` file, or sample it from a dataset with
    :meth:`sample`. Ids are unique; missing ids become ``p0``, ``p1``, ...
    """

    def __init__(self, probes: Iterable[Any]):
        items: list[Probe] = []
        seen: set[str] = set()
        for i, raw in enumerate(probes):
            where = f"probe {i}"
            if isinstance(raw, Probe):
                raw = raw.to_dict()
            if isinstance(raw, str):
                raw = {"text": raw}
            if not isinstance(raw, Mapping):
                raise ProbeError(
                    f"{where}: expected a string or a mapping with a 'text' key, got "
                    f"{type(raw).__name__}."
                )
            if "text" not in raw:
                raise ProbeError(f"{where}: has no 'text' key (keys: {sorted(raw)}).")
            pid = str(raw.get("id", f"p{i}"))
            where = f"probe {i} (id {pid!r})"
            text = _check_text(raw["text"], where)
            pair = raw.get("text_pair")
            if pair is not None:
                pair = _check_text(pair, where, "text_pair")
            if pid in seen:
                raise ProbeError(f"{where}: duplicate id; every probe id must be unique.")
            seen.add(pid)
            label = raw.get("label")
            if hasattr(label, "item"):
                label = label.item()
            items.append(Probe(text=text, id=pid, label=label, text_pair=pair))
        if not items:
            raise ProbeError("the probe set is empty; give at least one text to attribute.")
        self._probes = tuple(items)

    def __len__(self) -> int:
        return len(self._probes)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return list(self._probes[index])
        return self._probes[index]

    def __repr__(self) -> str:
        return f"ProbeSet({len(self)} probes, fingerprint={self.fingerprint[:12]})"

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the probes' canonical JSON: equal fingerprints, equal probe sets."""
        blob = json.dumps([p.to_dict() for p in self._probes], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def has_labels(self) -> bool:
        return any(p.label is not None for p in self._probes)

    def shard(self, rank: int, world_size: int) -> list[Probe]:
        """This rank's share of the probes (round-robin), for data-parallel checks."""
        return list(self._probes[rank::world_size])

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for p in self._probes:
                fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def from_file(cls, path: str | Path, text_key: str = "text", label_key: str = "label") -> "ProbeSet":
        """Read ``.jsonl`` (one object a line), ``.csv`` (header row) or ``.txt`` (one text a line)."""
        path = Path(path)
        if not path.exists():
            raise ProbeError(f"probe file {path} does not exist.")
        suffix = path.suffix.lower()
        rows: list[Any]
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise ProbeError(f"{path}:{n}: not valid JSON ({err.msg}).") from None
        elif suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
        elif suffix == ".txt":
            with open(path, encoding="utf-8") as fh:
                rows = [line.rstrip("\n") for line in fh if line.strip()]
        else:
            raise ProbeError(f"{path}: unknown probe file type {suffix!r}; use .jsonl, .csv or .txt.")
        if text_key != "text" or label_key != "label":
            rows = [_rename(r, text_key, label_key) if isinstance(r, Mapping) else r for r in rows]
        return cls(rows)

    @classmethod
    def sample(
        cls,
        dataset: Any,
        n: int = 32,
        *,
        text_key: str = "text",
        label_key: str | None = "label",
        text_pair_key: str | None = None,
        seed: int = 0,
        stratified: bool = True,
    ) -> "ProbeSet":
        """Draw ``n`` probes from a dataset, seeded and (with labels) stratified by label.

        ``dataset`` is anything indexable whose items are mappings (a Hugging Face
        ``datasets.Dataset``, a list of dicts) or ``(text, label)`` tuples. Ids are the
        dataset indices, so the same seed gives the same probes. A dataset with
        ``column_names`` is checked for ``text_key`` up front and, with ``select_columns``,
        read through the probe columns only (token id columns are not decoded).
        """
        if n <= 0:
            raise ProbeError(f"n must be positive, got {n}.")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ProbeError(f"cannot sample probes from a {type(dataset).__name__}: it is not an indexable dataset.")
        columns = getattr(dataset, "column_names", None)
        if isinstance(columns, (list, tuple)):
            if text_key not in columns:
                raise ProbeError(
                    f"the dataset has no {text_key!r} column (columns: {sorted(columns)}); "
                    "name the text column with text_key=."
                )
            if callable(getattr(dataset, "select_columns", None)):
                dataset = dataset.select_columns([k for k in (text_key, text_pair_key, label_key) if k in columns])
        size = len(dataset)
        if size == 0:
            raise ProbeError("cannot sample probes from an empty dataset.")

        def row(i: int) -> dict[str, Any]:
            item = dataset[i]
            if isinstance(item, Mapping):
                if text_key not in item:
                    raise ProbeError(
                        f"dataset rows have no {text_key!r} column (columns: {sorted(item)}); "
                        "name the text column with text_key=."
                    )
                out = {"text": item[text_key], "id": f"d{i}"}
                if label_key and label_key in item:
                    out["label"] = item[label_key]
                if text_pair_key:
                    out["text_pair"] = item[text_pair_key]
                return out
            if isinstance(item, (tuple, list)) and item:
                out = {"text": item[0], "id": f"d{i}"}
                if len(item) > 1:
                    out["label"] = item[1]
                return out
            if isinstance(item, str):
                return {"text": item, "id": f"d{i}"}
            raise ProbeError(f"dataset item {i} is a {type(item).__name__}; expected a mapping.")

        rng = random.Random(seed)
        indices = list(range(size))
        rng.shuffle(indices)
        if n >= size:
            chosen = sorted(indices)
        elif stratified and label_key:
            by_label: dict[Any, list[int]] = defaultdict(list)
            for i in indices:
                lab = row(i).get("label")
                by_label[_hashable(lab)].append(i)
            chosen = _round_robin(list(by_label.values()), n)
        else:
            chosen = sorted(indices[:n])
        return cls([row(i) for i in chosen])


def _rename(row: Mapping[str, Any], text_key: str, label_key: str) -> dict[str, Any]:
    out = dict(row)
    if text_key in out:
        out["text"] = out.pop(text_key)
    if label_key in out:
        out["label"] = out.pop(label_key)
    return out


def _hashable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return tuple(value) if isinstance(value, list) else value


def _round_robin(groups: list[list[int]], n: int) -> list[int]:
    """Take one index from each group in turn: proportions as even as the groups allow."""
    groups = [g for g in groups if g]
    groups.sort(key=lambda g: g[0])
    chosen: list[int] = []
    pos = 0
    while len(chosen) < n:
        progressed = False
        for g in groups:
            if pos < len(g) and len(chosen) < n:
                chosen.append(g[pos])
                progressed = True
        if not progressed:
            break
        pos += 1
    return sorted(chosen)


def as_probe_set(probes: Any) -> ProbeSet:
    """Accept a ``ProbeSet``, a path or a list, and return a ``ProbeSet``."""
    if isinstance(probes, ProbeSet):
        return probes
    if isinstance(probes, (str, Path)):
        return ProbeSet.from_file(probes)
    if probes is None:
        raise ProbeError("no probes given; pass a list of texts, a file, or ProbeSet.sample(...).")
    return ProbeSet(probes)
