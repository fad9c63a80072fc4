"""The batch sampler against plain numpy references on small crafted logits."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from constrained.bitmask import pack_token_ids
from constrained.sampling import SamplingParams, TokenHistory, _inverse_cdf, _truncate_, sample

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------- references
def ref_process(
    logits: list[float],
    p: SamplingParams,
    prompt: list[int] = (),
    output: list[int] = (),
    allowed: set[int] | None = None,
) -> np.ndarray:
    """Steps 1-5 written out token by token."""
    out = np.array(logits, dtype=np.float64)
    for token, bias in p.logit_bias.items():
        out[token] += bias
    for token in set(prompt) | set(output):
        out[token] = (
            out[token] * p.repetition_penalty if out[token] < 0 else out[token] / p.repetition_penalty
        )
    for token, count in Counter(output).items():
        out[token] -= count * p.frequency_penalty + p.presence_penalty
    if allowed is not None:
        for token in range(len(out)):
            if token not in allowed:
                out[token] = NEG_INF
    if p.temperature > 0:
        out = out / p.temperature
    return out


def ref_log_softmax(x: np.ndarray) -> np.ndarray:
    top = x.max()
    return x - top - math.log(np.exp(x - top).sum())


def ref_top_k(x: np.ndarray, keep: set[int], k: int) -> set[int]:
    return set(sorted(keep, key=lambda t: -x[t])[:k])


def ref_top_p(x: np.ndarray, keep: set[int], top_p: float) -> set[int]:
    total = sum(math.exp(x[t]) for t in keep)
    kept, mass = set(), 0.0
    for token in sorted(keep, key=lambda t: -x[t]):
        if mass >= top_p:
            break
        kept.add(token)
        mass += math.exp(x[token]) / total
    return kept


def ref_min_p(x: np.ndarray, keep: set[int], min_p: float) -> set[int]:
    top = max(x[t] for t in keep)
    return {t for t in keep if math.exp(x[t] - top) >= min_p}


def ref_keep(x: np.ndarray, p: SamplingParams, order: str = "kpm") -> set[int]:
    keep = {t for t in range(len(x)) if np.isfinite(x[t])}
    for step in order:
        if step == "k" and p.top_k > 0:
            keep = ref_top_k(x, keep, p.top_k)
        elif step == "p":
            keep = ref_top_p(x, keep, p.top_p)
        elif step == "m":
            keep = ref_min_p(x, keep, p.min_p)
    return keep


def ref_distribution(x: np.ndarray, keep: set[int]) -> np.ndarray:
    probs = np.zeros(len(x))
    for token in keep:
        probs[token] = math.exp(x[token] - max(x[t] for t in keep))
    return probs / probs.sum()


# ---------------------------------------------------------------------------------------------- helpers
def generators(count: int, first_seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(first_seed + i) for i in range(count)]


def draw_many(logits: list[float], p: SamplingParams, draws: int, **kwargs: object) -> np.ndarray:
    """`draws` independent samples of one row, in one batched call (one row per draw)."""
    batch = torch.tensor([logits] * draws, dtype=torch.float32)
    return sample(batch, [p] * draws, generators=generators(draws), **kwargs).token_ids.numpy()


def chi_square(tokens: np.ndarray, expected: np.ndarray) -> tuple[float, int]:
    observed = np.bincount(tokens, minlength=len(expected))
    support = expected > 0
    assert observed[~support].sum() == 0, "sampled a token outside the expected support"
    wanted = expected[support] * len(tokens)
    return float(((observed[support] - wanted) ** 2 / wanted).sum()), int(support.sum()) - 1


def assert_follows(tokens: np.ndarray, expected: np.ndarray) -> None:
    stat, dof = chi_square(tokens, expected)
    assert stat < dof + 6 * math.sqrt(2 * dof) + 10, f"chi-square {stat:.1f} with {dof} degrees of freedom"


LOGITS = [1.5, -0.5, 0.3, 2.2, -1.7, 0.0, 1.1, -2.5, 0.8, 0.4, -0.2, 1.9]
PROMPT = [0, 3, 3, 7]
OUTPUT = [3, 5, 5, 5, 11]


def history_for(rows: int, prompt: list[int] = PROMPT, output: list[int] = OUTPUT) -> TokenHistory:
    history = TokenHistory.from_prompts([prompt] * rows, len(LOGITS))
    for token in output:
        history.append(torch.full((rows,), token))
    return history


# ---------------------------------------------------------------------------------------------- params
def test_params_validate_and_freeze() -> None:
    for bad in (
        {"temperature": -0.1},
        {"temperature": 2.5},
        {"top_p": 0.0},
        {"top_k": -2},
        {"min_p": 1.5},
        {"repetition_penalty": 0.0},
        {"frequency_penalty": 2.5},
        {"presence_penalty": -3.0},
        {"logit_bias": {3: 101.0}},
        {"logit_bias": {-1: 1.0}},
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    source = {"5": 2}
    params = SamplingParams(logit_bias=source)
    source["6"] = 1
    assert dict(params.logit_bias) == {5: 2.0}
    with pytest.raises(TypeError):
        params.logit_bias[7] = 1.0  # type: ignore[index]
    assert hash(params) == hash(SamplingParams(logit_bias={5: 2.0}))


# ---------------------------------------------------------------------------------------------- steps 1-5
SINGLE_STEPS = {
    "plain": SamplingParams(),
    "logit_bias": SamplingParams(logit_bias={1: 5.0, 3: -4.0, 10: 0.5}),
    "repetition_penalty": SamplingParams(repetition_penalty=1.7),
    "repetition_penalty_below_one": SamplingParams(repetition_penalty=0.6),
    "frequency_penalty": SamplingParams(frequency_penalty=0.8),
    "negative_frequency_penalty": SamplingParams(frequency_penalty=-1.3),
    "presence_penalty": SamplingParams(presence_penalty=1.5),
    "temperature": SamplingParams(temperature=0.4),
    "greedy": SamplingParams(temperature=0.0),
    "all": SamplingParams(
        temperature=1.6,
        repetition_penalty=1.3,
        frequency_penalty=0.5,
        presence_penalty=-0.7,
        logit_bias={0: -3.0, 4: 2.0, 5: 1.0},
    ),
}


@pytest.mark.parametrize("name", SINGLE_STEPS)
@pytest.mark.parametrize("masked", [False, True])
def test_logprobs_match_reference(name: str, masked: bool) -> None:
    p = SINGLE_STEPS[name]
    allowed = {0, 2, 3, 5, 6, 9, 11} if masked else None
    bitmask = torch.from_numpy(pack_token_ids(sorted(allowed), len(LOGITS)))[None] if masked else None
    result = sample(
        torch.tensor([LOGITS]),
        [p],
        history=history_for(1),
        bitmask=bitmask,
        generators=generators(1),
        return_logprobs=True,
    )
    expected = ref_log_softmax(ref_process(LOGITS, p, PROMPT, OUTPUT, allowed))
    np.testing.assert_allclose(result.logprobs[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    if masked:
        assert result.token_ids.item() in allowed


def test_logprobs_only_when_asked() -> None:
    assert sample(torch.tensor([LOGITS]), [SamplingParams()]).logprobs is None


def test_penalty_order_bias_then_repetition_then_counts_then_temperature() -> None:
    # token 0: logit 1.0, bias -2 -> -1.0, repetition 2 multiplies -> -2.0,
    # frequency 0.5 x 2 -> -3.0, temperature 0.5 -> -6.0
    p = SamplingParams(temperature=0.5, repetition_penalty=2.0, frequency_penalty=0.5, logit_bias={0: -2.0})
    logits = [1.0, 0.0, 0.0]
    history = TokenHistory.from_prompts([[0]], 3)
    history.append(torch.tensor([0]))
    history.append(torch.tensor([0]))
    result = sample(torch.tensor([logits]), [p], history=history, return_logprobs=True)
    processed = result.logprobs[0] - result.logprobs[0, 1]  # tokens 1 and 2 keep logit 0
    assert processed[0].item() == pytest.approx(-6.0, abs=1e-5)
    # other orders give other values: penalty before bias -> (1/2 - 2 - 1) / 0.5 = -5; temperature first -> -5
    assert processed[0].item() != pytest.approx((1.0 / 2.0 - 2.0 - 1.0) / 0.5, abs=0.1)
    assert processed[0].item() != pytest.approx(((1.0 - 2.0) / 0.5) * 2.0 - 1.0, abs=0.1)


def test_counts_are_over_output_only_and_repetition_over_prompt_and_output() -> None:
    history = TokenHistory.from_prompts([[1, 1, 2], [4]], 6)
    history.append(torch.tensor([2, 4]))
    history.append(torch.tensor([3]), rows=torch.tensor([1]))
    assert history.counts.tolist() == [[0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]]
    assert history.seen.tolist() == [[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0]]
    p = SamplingParams(presence_penalty=1.0)
    logprobs = sample(torch.zeros(2, 6), [p, p], history=history, return_logprobs=True).logprobs
    gaps = logprobs - logprobs[:, :1]
    np.testing.assert_allclose(gaps.numpy(), [[0, 0, -1, 0, 0, 0], [0, 0, 0, -1, -1, 0]], atol=1e-6)


def test_history_select_concat_and_slices() -> None:
    history = TokenHistory.from_prompts([[0], [1], [2]], 5)
    history.append(torch.tensor([4, 4]), rows=slice(1, 3))
    picked = history.select(torch.tensor([2, 0]))
    assert picked.seen.tolist() == [[0, 0, 1, 0, 1], [1, 0, 0, 0, 0]]
    joined = picked.concat(TokenHistory.from_prompts([[3]], 5))
    assert len(joined) == 3 and joined.vocab_size == 5
    joined.append(torch.tensor([1, 1, 1]))
    assert joined.counts.tolist() == [[0, 1, 0, 0, 1], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert len(TokenHistory.empty(5).concat(joined)) == 3
    with pytest.raises(ValueError):
        joined.append(torch.tensor([1, 1]))


def test_penalties_need_a_history() -> None:
    with pytest.raises(ValueError):
        sample(torch.tensor([LOGITS]), [SamplingParams(frequency_penalty=1.0)])


def test_logit_bias_outside_vocabulary_is_rejected() -> None:
    with pytest.raises(ValueError):
        sample(torch.tensor([LOGITS]), [SamplingParams(logit_bias={len(LOGITS): 1.0})])


# ---------------------------------------------------------------------------------------------- greedy
def test_greedy_takes_argmax_after_bias_penalties_and_mask() -> None:
    assert int(np.argmax(LOGITS)) == 3
    history = history_for(1)
    cases = [
        (SamplingParams(temperature=0.0), None, 3),
        (SamplingParams(temperature=0.0, logit_bias={9: 3.0}), None, 9),
        (SamplingParams(temperature=0.0, repetition_penalty=3.0), None, 6),  # 0, 3 and 11 were seen
        (SamplingParams(temperature=0.0, frequency_penalty=1.0), None, 0),  # 3 and 11 are in the output
        (SamplingParams(temperature=0.0), {1, 4, 7}, 1),
        (SamplingParams(temperature=0.0, logit_bias={7: 5.0}), {1, 4, 7}, 7),
        (SamplingParams(temperature=0.0, logit_bias={3: 100.0}), {1, 4}, 1),  # bias cannot unmask
    ]
    for p, allowed, want in cases:
        bitmask = None if allowed is None else torch.from_numpy(pack_token_ids(sorted(allowed), 12))[None]
        expected = int(np.argmax(ref_process(LOGITS, p, PROMPT, OUTPUT, allowed)))
        assert expected == want
        token = sample(torch.tensor([LOGITS]), [p], history=history, bitmask=bitmask).token_ids.item()
        assert token == want, (p, allowed)


def test_greedy_ignores_truncation_and_does_not_use_its_generator() -> None:
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    p = SamplingParams(temperature=0.0, top_k=2, top_p=0.1, min_p=0.9)
    assert sample(torch.tensor([LOGITS]), [p], generators=[generator]).token_ids.item() == 3
    assert torch.equal(generator.get_state(), state)


# ---------------------------------------------------------------------------------------------- truncation
def kept_support(logits: list[float], p: SamplingParams, draws: int = 4000) -> set[int]:
    return set(draw_many(logits, p, draws).tolist())


@pytest.mark.parametrize(
    "p",
    [
        SamplingParams(top_k=1),
        SamplingParams(top_k=3),
        SamplingParams(top_k=3, temperature=0.3),
        SamplingParams(top_p=0.5),
        SamplingParams(top_p=0.8, temperature=1.5),
        SamplingParams(min_p=0.3),
        SamplingParams(min_p=0.3, temperature=0.5),
        SamplingParams(min_p=1.0),
    ],
)
def test_each_truncation_alone_keeps_the_reference_set(p: SamplingParams) -> None:
    expected = ref_keep(ref_process(LOGITS, p), p)
    assert kept_support(LOGITS, p) == expected


def test_top_k_then_top_p_order() -> None:
    probs = [0.4, 0.2, 0.15, 0.1, 0.08, 0.07]
    logits = [math.log(x) for x in probs]
    p = SamplingParams(top_k=4, top_p=0.7)
    x = ref_process(logits, p)
    assert ref_keep(x, p, "kpm") == {0, 1}
    assert ref_keep(x, p, "pkm") == {0, 1, 2}  # top_p over the full distribution keeps one more
    assert kept_support(logits, p) == {0, 1}


def test_top_p_then_min_p_order() -> None:
    probs = [0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05]
    logits = [math.log(x) for x in probs]
    p = SamplingParams(top_k=5, top_p=0.8, min_p=0.4)
    x = ref_process(logits, p)
    assert ref_keep(x, p, "kpm") == {0, 1, 2, 3}
    assert ref_keep(x, p, "kmp") == {0, 1, 2}  # top_p after min_p renormalizes over fewer tokens
    assert kept_support(logits, p) == {0, 1, 2, 3}


def test_truncation_interacts_with_temperature_and_mask() -> None:
    allowed = {1, 2, 5, 8, 9, 10}
    bitmask = torch.from_numpy(pack_token_ids(sorted(allowed), 12))[None].expand(4000, -1)
    p = SamplingParams(temperature=0.7, top_k=4, top_p=0.9, min_p=0.1)
    tokens = draw_many(LOGITS, p, 4000, bitmask=bitmask)
    expected = ref_distribution(
        ref_process(LOGITS, p, allowed=allowed), ref_keep(ref_process(LOGITS, p, allowed=allowed), p)
    )
    assert set(tokens.tolist()) == set(np.flatnonzero(expected).tolist())
    assert_follows(tokens, expected)


@pytest.mark.parametrize("vocab", [300, 3000])
def test_truncate_matches_reference_including_large_nuclei(vocab: int) -> None:
    rng = np.random.default_rng(vocab)
    rows = [
        (rng.normal(0, 0.3, vocab), SamplingParams(top_p=0.9)),  # flat: the nucleus outgrows the first guess
        (rng.normal(0, 3.0, vocab), SamplingParams(top_p=0.6)),
        (rng.normal(0, 1.0, vocab), SamplingParams(top_k=50, top_p=0.7)),
        (rng.normal(0, 1.0, vocab), SamplingParams(top_k=400, min_p=0.2)),
        (rng.normal(0, 1.0, vocab), SamplingParams(min_p=0.05)),
        (rng.normal(0, 1.0, vocab), SamplingParams()),
    ]
    logits = torch.tensor(np.stack([r[0] for r in rows]), dtype=torch.float32)
    _truncate_(
        logits,
        top_k=[p.top_k for _, p in rows],
        top_p=[p.top_p for _, p in rows],
        min_p=[p.min_p for _, p in rows],
    )
    for row, (x, p) in enumerate(rows):
        kept = set(torch.isfinite(logits[row]).nonzero().flatten().tolist())
        assert kept == ref_keep(x.astype(np.float32).astype(np.float64), p), row


# ---------------------------------------------------------------------------------------------- sampling
def test_mask_never_lets_a_disallowed_token_through() -> None:
    rng = np.random.default_rng(3)
    vocab, draws = 50, 3000
    logits = torch.tensor(rng.normal(0, 4, (draws, vocab)), dtype=torch.float32)
    allowed = [
        set(rng.choice(vocab, size=int(rng.integers(1, 6)), replace=False).tolist()) for _ in range(draws)
    ]
    bitmask = torch.from_numpy(np.stack([pack_token_ids(sorted(a), vocab) for a in allowed]))
    choices = [SamplingParams(temperature=2.0), SamplingParams(top_p=0.3), SamplingParams(top_k=2, min_p=0.5)]
    params = [choices[i % 3] for i in range(draws)]
    tokens = sample(logits, params, bitmask=bitmask, generators=generators(draws)).token_ids.tolist()
    assert all(token in a for token, a in zip(tokens, allowed, strict=True))


def test_row_with_no_allowed_token_is_an_error() -> None:
    bitmask = torch.from_numpy(np.stack([pack_token_ids([1], 12), pack_token_ids([], 12)]))
    with pytest.raises(ValueError, match="row 1 has no allowed token"):
        sample(torch.tensor([LOGITS, LOGITS]), [SamplingParams()] * 2, bitmask=bitmask)


def run_steps(seed: int, steps: int = 30) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    p = SamplingParams(temperature=1.3, seed=seed)
    return [
        sample(torch.tensor([LOGITS]), [p], generators=[generator]).token_ids.item() for _ in range(steps)
    ]


def test_seeded_determinism() -> None:
    assert run_steps(42) == run_steps(42)
    assert run_steps(42) != run_steps(43)


def test_rows_are_independent_of_their_batch_neighbours() -> None:
    p = SamplingParams(temperature=0.9, top_p=0.95)
    alone = sample(torch.tensor([LOGITS]), [p], generators=generators(1, 100)).token_ids.item()
    others = [SamplingParams(temperature=0.0), SamplingParams(top_k=2), SamplingParams(min_p=0.2)]
    batch = torch.tensor([LOGITS[::-1], LOGITS, LOGITS[::-1], LOGITS])
    mixed = sample(
        batch,
        [others[0], p, others[1], others[2]],
        generators=[*generators(1, 7), *generators(1, 100), *generators(2, 9)],
    )
    assert mixed.token_ids[1].item() == alone


@pytest.mark.parametrize(
    "p",
    [SamplingParams(), SamplingParams(temperature=0.5), SamplingParams(temperature=1.8, logit_bias={4: 3.0})],
)
def test_empirical_frequencies_follow_the_distribution(p: SamplingParams) -> None:
    tokens = draw_many(LOGITS, p, 20000)
    x = ref_process(LOGITS, p)
    assert_follows(tokens, ref_distribution(x, ref_keep(x, p)))


def test_mixed_batch_rows_follow_their_own_params() -> None:
    groups = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.6, top_k=5),
        SamplingParams(temperature=1.2, top_p=0.85, repetition_penalty=1.5),
        SamplingParams(min_p=0.15, frequency_penalty=0.7, presence_penalty=0.3, logit_bias={7: 4.0}),
    ]
    per_group = 5000
    params = [groups[i % len(groups)] for i in range(per_group * len(groups))]
    batch = len(params)
    result = sample(
        torch.tensor([LOGITS] * batch),
        params,
        history=history_for(batch),
        generators=generators(batch, 1000),
        return_logprobs=True,
    )
    tokens = result.token_ids.numpy()
    for g, p in enumerate(groups):
        x = ref_process(LOGITS, p, PROMPT, OUTPUT)
        group_tokens = tokens[g :: len(groups)]
        np.testing.assert_allclose(result.logprobs[g].numpy(), ref_log_softmax(x), atol=1e-5)
        if p.greedy:
            assert (group_tokens == int(np.argmax(x))).all()
        else:
            assert_follows(group_tokens, ref_distribution(x, ref_keep(x, p)))


def test_input_logits_are_not_modified_and_expanded_views_work() -> None:
    logits = torch.tensor([LOGITS])
    original = logits.clone()
    bitmask = torch.from_numpy(pack_token_ids([2, 3], 12))[None].expand(3, -1)
    params = [SamplingParams(logit_bias={2: 9.0}, top_k=1, temperature=0.5)] * 3
    tokens = sample(logits.expand(3, -1), params, bitmask=bitmask).token_ids
    assert tokens.tolist() == [2, 2, 2]
    assert torch.equal(logits, original)


def test_inverse_cdf_never_returns_a_zero_probability_token() -> None:
    probs = torch.zeros(4, 600)
    probs[:, 255] = 0.5  # last token of the first block
    probs[:, 256] = 0.25  # first token of the second block
    probs[:, 599] = 0.25  # last token of a partial block
    probs[3] = 0.0
    probs[3, 0] = 1e-30  # far below float64 resolution next to the rest of the row
    probs[3, 300] = 1.0
    uniforms = torch.tensor([0.0, 0.5, 1.0 - 2.0**-53, 1.0 - 2.0**-53], dtype=torch.float64)
    assert _inverse_cdf(probs, uniforms).tolist() == [255, 256, 599, 300]
    assert _inverse_cdf(probs[3:], torch.zeros(1, dtype=torch.float64)).tolist() == [0]


def test_replace_keeps_validation() -> None:
    with pytest.raises(ValueError):
        replace(SamplingParams(), top_p=2.0)
