"""Hand-built attribution records for the drift, alert and shortcut tests."""

from __future__ import annotations

from explain_callbacks.attribution.records import ProbeAttribution, Snapshot

CLASS_NAMES = ("negative", "positive")


def attribution(
    probe_id: str,
    words: list[str],
    shares: list[float],
    *,
    target: int = 1,
    prediction: int | None = None,
    converged: bool = True,
    rel_delta: float = 0.01,
    text: str | None = None,
    logits: list[float] | None = None,
) -> ProbeAttribution:
    """One probe's attribution with the given word shares (scores equal the shares)."""
    assert len(words) == len(shares)
    prediction = target if prediction is None else prediction
    return ProbeAttribution(
        probe_id=probe_id,
        text=text if text is not None else " ".join(words),
        target=target,
        target_name=CLASS_NAMES[target],
        prediction=prediction,
        prediction_name=CLASS_NAMES[prediction],
        tokens=list(words),
        token_scores=list(shares),
        words=list(words),
        word_scores=list(shares),
        word_shares=list(shares),
        delta=0.0,
        rel_delta=rel_delta,
        n_steps=50,
        converged=converged,
        f_input=1.0,
        f_baseline=0.0,
        scores=list(logits or []),
    )


def snapshot(check_index: int, attributions: list[ProbeAttribution], epoch: int | None = None) -> Snapshot:
    return Snapshot(
        check_index=check_index,
        step=100 * (check_index + 1),
        epoch=check_index if epoch is None else epoch,
        attributions=attributions,
    )
