"""Batched token sampling: per-request sampling parameters applied to a whole batch of logits at once.

Contract:
- `sample(logits, params, history=, bitmask=, generators=, return_logprobs=)` picks one token per row of
  `[batch, vocab]` logits, row i following `params[i]`, and returns a `SampleResult`. The input logits are
  never modified. Every step is a batched torch op on the logits' device (CPU or GPU, unchanged); a step no
  row uses is skipped. Python loops run over batch rows only (logit_bias entries, per-row random draws).
- Step order, part of the contract:
    1. logit_bias: `logit += bias[token]`.
    2. repetition_penalty (HF rule) over every token in the prompt or the output so far: a positive logit is
       divided by the penalty, a negative one multiplied.
    3. frequency / presence penalties (OpenAI rule) over OUTPUT tokens only:
       `logit -= count * frequency_penalty + (count > 0) * presence_penalty`.
    4. grammar bitmask: disallowed tokens get -inf (`constrained.bitmask.apply_bitmask_`).
    5. temperature: `logit /= temperature`; temperature 0 means greedy (the row keeps its logits as they are).
    6. top_k: keep the tokens whose logit is >= the k-th largest (ties at the cut-off are all kept).
    7. top_p: keep the smallest prefix of the most probable tokens, over the distribution renormalized after
       top_k, whose cumulative probability is >= top_p (ties at the cut-off are all kept).
    8. min_p: drop tokens whose probability is < min_p * the top token's probability.
    9. pick: greedy rows take the argmax of the logits after step 4 (lowest id on ties); other rows draw from
       the softmax of the truncated logits.
  The top token always survives steps 6-8.
- Reported logprobs (`return_logprobs=True`): `log_softmax` of the logits after step 5, before truncation;
  greedy rows are reported at temperature 1. Disallowed tokens have logprob -inf.
- Randomness: row i draws one uniform number per step from `generators[i]` (a `torch.Generator` on the
  logits' device; None = the device's default generator) and inverts the row's cumulative distribution, so
  a row's token depends only on its own logits, parameters and generator: the same seed and request give the
  same tokens whatever else shares the batch. Greedy rows draw nothing. The `n` choices of one request must
  be given different generators (for example seeded with seed and choice index), or they sample identically.
  (Inverse-CDF sampling is exactly categorical sampling, like the exponential race `argmax(p / Exp(1))`, but
  needs one random number per row instead of one per vocabulary entry: the race's noise costs ~30 ns per
  token on CPU, several milliseconds per row for a 150k vocabulary.)
- `TokenHistory` holds, per row, the prompt+output "seen" set and the output token counts as dense
  `[batch, vocab]` float32 tensors; the decode loop appends one token per row per step without rescanning,
  and reorders rows with `select` / `concat` as sequences leave or join the batch.
- Errors: `ValueError` for inconsistent shapes, out-of-range logit_bias ids, penalties without a history,
  and a row whose every token is disallowed by the bitmask ("row i has no allowed token"); callers must
  never pass such a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from constrained.bitmask import apply_bitmask_

_NEG_INF = float("-inf")
_CHUNK = 256  # tokens per block of the two-level inverse-CDF search
_TOP_P_CANDIDATES = 256  # first top-p candidate set; grown 8x until it covers every top-p row
_CANDIDATE_GROWTH = 8


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling parameters (validated on construction)."""

    temperature: float = 1.0  # [0, 2]; 0 = greedy
    top_p: float = 1.0  # (0, 1]
    top_k: int = 0  # >= 1, or 0 / -1 = off
    min_p: float = 0.0  # [0, 1]
    repetition_penalty: float = 1.0  # > 0
    frequency_penalty: float = 0.0  # [-2, 2]
    presence_penalty: float = 0.0  # [-2, 2]
    logit_bias: Mapping[int, float] = field(default_factory=dict, hash=False)  # token id -> [-100, 100]
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be in [0, 2], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be >= 1, or 0 / -1 for no limit, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0.0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        bias = {int(token): float(value) for token, value in self.logit_bias.items()}
        for token, value in bias.items():
            if token < 0 or not -100.0 <= value <= 100.0:
                raise ValueError(f"logit_bias entry {token}: {value} must map a token id >= 0 to [-100, 100]")
        object.__setattr__(self, "logit_bias", MappingProxyType(bias))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class SampleResult:
    token_ids: torch.Tensor  # [batch] int64
    logprobs: torch.Tensor | None  # [batch, vocab] float32, only when asked for


class TokenHistory:
    """Per-row token history for the penalties, updated incrementally by the decode loop.

    `seen[r, t]` is 1.0 when token t occurs in row r's prompt or output, `counts[r, t]` counts its occurrences
    in the output only; both are `[batch, vocab]` float32 on one device.
    """

    def __init__(self, seen: torch.Tensor, counts: torch.Tensor) -> None:
        if seen.shape != counts.shape or seen.dim() != 2:
            raise ValueError("seen and counts must be [batch, vocab] tensors of one shape")
        self.seen = seen
        self.counts = counts

    @classmethod
    def empty(cls, vocab_size: int, device: torch.device | str | None = None) -> TokenHistory:
        """A history of zero rows."""
        return cls.from_prompts([], vocab_size, device)

    @classmethod
    def from_prompts(
        cls, prompts: Sequence[Sequence[int]], vocab_size: int, device: torch.device | str | None = None
    ) -> TokenHistory:
        """One row per prompt, with no output yet."""
        seen = torch.zeros(len(prompts), vocab_size, dtype=torch.float32, device=device)
        row_ids = [row for row, prompt in enumerate(prompts) for _ in prompt]
        token_ids = [token for prompt in prompts for token in prompt]
        if token_ids:
            rows = torch.tensor(row_ids, dtype=torch.long, device=device)
            tokens = torch.tensor(token_ids, dtype=torch.long, device=device)
            seen.index_put_((rows, tokens), torch.ones((), device=seen.device))
        return cls(seen, torch.zeros_like(seen))

    def __len__(self) -> int:
        return self.seen.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.seen.shape[1]

    def append(self, tokens: torch.Tensor, rows: slice | torch.Tensor | None = None) -> None:
        """Record one new output token per row: `tokens[i]` for row `rows[i]` (all rows when None)."""
        device = self.seen.device
        if rows is None:
            index = torch.arange(len(self), device=device)
        elif isinstance(rows, slice):
            index = torch.arange(len(self), device=device)[rows]
        else:
            index = rows.to(device)
        tokens = tokens.to(device=device, dtype=torch.long)
        if index.shape != tokens.shape:
            raise ValueError(f"{tokens.numel()} tokens for {index.numel()} rows")
        one = torch.ones((), device=device)
        self.counts.index_put_((index, tokens), one.expand(tokens.shape), accumulate=True)
        self.seen.index_put_((index, tokens), one)

    def select(self, rows: torch.Tensor) -> TokenHistory:
        """A new history of the given rows, in that order."""
        rows = rows.to(self.seen.device)
        return TokenHistory(self.seen.index_select(0, rows), self.counts.index_select(0, rows))

    def concat(self, other: TokenHistory) -> TokenHistory:
        """A new history with `other`'s rows after this one's."""
        return TokenHistory(torch.cat([self.seen, other.seen]), torch.cat([self.counts, other.counts]))


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    *,
    history: TokenHistory | None = None,
    bitmask: torch.Tensor | None = None,
    generators: Sequence[torch.Generator | None] | None = None,
    return_logprobs: bool = False,
) -> SampleResult:
    """Pick one token per row of `[batch, vocab]` logits; see the module docstring for the step order.

    `history` is required when any row uses a repetition, frequency or presence penalty; `bitmask` is a
    `[batch, words]` int32 grammar mask (`constrained.bitmask`); `generators[i]` drives row i's draws.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
    batch, vocab = logits.shape
    if len(params) != batch:
        raise ValueError(f"{len(params)} SamplingParams for {batch} rows")
    if generators is not None and len(generators) != batch:
        raise ValueError(f"{len(generators)} generators for {batch} rows")
    work = logits.to(dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)

    if any(p.logit_bias for p in params):
        _apply_logit_bias_(work, params)
    uses_repetition = any(p.repetition_penalty != 1.0 for p in params)
    uses_counts = any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params)
    if uses_repetition or uses_counts:
        if history is None or history.seen.shape != work.shape:
            raise ValueError("penalties need a TokenHistory with one row per logits row and the same vocab")
        if uses_repetition:
            _apply_repetition_penalty_(work, history.seen, [p.repetition_penalty for p in params])
        if uses_counts:
            _apply_count_penalties_(work, history.counts, params)
    if bitmask is not None:
        apply_bitmask_(work, bitmask)
        empty = torch.isneginf(work.amax(dim=-1))
        if bool(empty.any()):
            raise ValueError(f"row {int(empty.nonzero()[0])} has no allowed token")

    greedy = [p.greedy for p in params]
    temperatures = [1.0 if g else p.temperature for p, g in zip(params, greedy, strict=True)]
    if any(t != 1.0 for t in temperatures):
        work.div_(_column(temperatures, work))
    logprobs = torch.log_softmax(work, dim=-1) if return_logprobs else None

    if all(greedy):
        return SampleResult(work.argmax(dim=-1), logprobs)
    greedy_tokens = work.argmax(dim=-1) if any(greedy) else None
    sampled = [not g for g in greedy]
    _truncate_(
        work,
        top_k=[p.top_k if s else 0 for p, s in zip(params, sampled, strict=True)],
        top_p=[p.top_p if s else 1.0 for p, s in zip(params, sampled, strict=True)],
        min_p=[p.min_p if s else 0.0 for p, s in zip(params, sampled, strict=True)],
    )
    tokens = _inverse_cdf(torch.softmax(work, dim=-1), _uniforms(generators, sampled, work.device))
    if greedy_tokens is not None:
        tokens = torch.where(_column(greedy, work, dtype=torch.bool).squeeze(1), greedy_tokens, tokens)
    return SampleResult(tokens, logprobs)


def _column(
    values: Sequence[float | int | bool], like: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """`[batch, 1]` tensor of per-row values on `like`'s device (float32 unless `dtype` says otherwise)."""
    return torch.tensor(values, dtype=dtype or torch.float32).to(like.device, non_blocking=True)[:, None]


def _apply_logit_bias_(logits: torch.Tensor, params: Sequence[SamplingParams]) -> None:
    vocab = logits.shape[1]
    rows = [row for row, p in enumerate(params) for _ in p.logit_bias]
    tokens = [token for p in params for token in p.logit_bias]
    values = [value for p in params for value in p.logit_bias.values()]
    if max(tokens) >= vocab:
        raise ValueError(f"logit_bias token id {max(tokens)} is outside the vocabulary of {vocab}")
    device = logits.device
    index = (
        torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True),
        torch.tensor(tokens, dtype=torch.long).to(device, non_blocking=True),
    )
    logits.index_put_(index, torch.tensor(values, dtype=logits.dtype).to(device), accumulate=True)


def _apply_repetition_penalty_(logits: torch.Tensor, seen: torch.Tensor, penalties: list[float]) -> None:
    """HF rule on seen tokens, as float arithmetic only (boolean selects are several times slower on CPU).

    Each logit is multiplied by `1 + seen * (k0 + k1 * sign(logit))`, which is 1 for unseen tokens, the
    penalty for seen negative logits and 1 / penalty for seen positive ones; -inf stays -inf.
    """
    penalty = _column(penalties, logits)
    k0 = (penalty + 1.0 / penalty) / 2.0 - 1.0
    k1 = (1.0 / penalty - penalty) / 2.0
    factor = torch.sign(logits).mul_(k1).add_(k0).mul_(seen).add_(1.0)
    logits.mul_(factor)


def _apply_count_penalties_(
    logits: torch.Tensor, counts: torch.Tensor, params: Sequence[SamplingParams]
) -> None:
    frequency = [p.frequency_penalty for p in params]
    presence = [p.presence_penalty for p in params]
    if any(frequency):
        logits.addcmul_(counts, _column(frequency, logits), value=-1.0)
    if any(presence):
        logits.addcmul_(counts.clamp(max=1.0), _column(presence, logits), value=-1.0)


def _truncate_(logits: torch.Tensor, top_k: list[int], top_p: list[float], min_p: list[float]) -> None:
    """Steps 6-8: set every token below the row's combined cut-off logit to -inf, in place."""
    batch, vocab = logits.shape
    uses_k = [0 < k < vocab for k in top_k]
    uses_p = [p < 1.0 for p in top_p]
    if not (any(uses_k) or any(uses_p) or any(m > 0.0 for m in min_p)):
        return
    cutoff = torch.full((batch, 1), _NEG_INF, device=logits.device)
    top_logit = None
    if any(uses_k) or any(uses_p):
        k = [kk if uk else vocab for kk, uk in zip(top_k, uses_k, strict=True)]
        p_only = [up and not uk for uk, up in zip(uses_k, uses_p, strict=True)]
        size = min(vocab, max([kk for kk, uk in zip(k, uses_k, strict=True) if uk], default=1))
        if any(p_only):
            size = max(size, min(vocab, _TOP_P_CANDIDATES))
        k_column = _column(k, logits, dtype=torch.long)
        while True:
            values = logits.topk(size, dim=-1).values  # [batch, size], descending
            kth = values.gather(1, (k_column.clamp(max=size) - 1))
            cutoff_k = torch.where(k_column < vocab, kth, _NEG_INF)
            if not any(uses_p):
                cutoff = cutoff_k
                break
            cutoff_p, covered = _top_p_cutoff(logits, values, k_column, top_p, p_only)
            if size == vocab or bool(covered):
                cutoff = torch.maximum(cutoff_k, cutoff_p)
                break
            size = min(vocab, size * _CANDIDATE_GROWTH)
        top_logit = values[:, :1]
    if any(m > 0.0 for m in min_p):
        if top_logit is None:
            top_logit = logits.amax(dim=-1, keepdim=True)
        cutoff = torch.maximum(cutoff, top_logit + torch.log(_column(min_p, logits)))
    logits.masked_fill_(logits < cutoff, _NEG_INF)


def _top_p_cutoff(
    logits: torch.Tensor, values: torch.Tensor, k_column: torch.Tensor, top_p: list[float], p_only: list[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p cut-off logit per row over the candidates `values`, and whether every top-p row is covered.

    Rows with a top_k renormalize over their k candidates; the others over the full vocabulary, and are
    covered only when the candidates' total probability reaches top_p.
    """
    size = values.shape[1]
    ranks = torch.arange(size, device=values.device)
    within_k = values.masked_fill(ranks >= k_column, _NEG_INF)
    normalizer = torch.logsumexp(within_k, dim=-1, keepdim=True)
    p_only_column = _column(p_only, logits, dtype=torch.bool)
    if any(p_only):
        normalizer = torch.where(p_only_column, torch.logsumexp(logits, dim=-1, keepdim=True), normalizer)
    cumulative = torch.exp(within_k - normalizer).cumsum(dim=-1, dtype=torch.float64)
    before = torch.nn.functional.pad(cumulative[:, :-1], (1, 0))  # mass of the more probable candidates
    top_p_column = _column(top_p, logits, dtype=torch.float64)
    keep = (before < top_p_column).sum(dim=-1, keepdim=True).clamp(min=1)
    cutoff = torch.where(top_p_column < 1.0, values.gather(1, keep - 1), _NEG_INF)
    covered = (~p_only_column | (cumulative[:, -1:] >= top_p_column)).all()
    return cutoff, covered


def _uniforms(
    generators: Sequence[torch.Generator | None] | None, sampled: list[bool], device: torch.device
) -> torch.Tensor:
    """One float64 uniform in [0, 1) per sampled row from its own generator; 0 for greedy rows."""
    draws = [
        torch.rand(
            1, generator=None if generators is None else generators[row], dtype=torch.float64, device=device
        )
        if is_sampled
        else torch.zeros(1, dtype=torch.float64, device=device)
        for row, is_sampled in enumerate(sampled)
    ]
    return torch.cat(draws)


def _inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Token `t` per row with `cdf(t - 1) <= u * total < cdf(t)`: categorical sampling from `probs`.

    Two levels keep it exact and cheap: float64 sums of blocks of `_CHUNK` tokens pick the block, then a
    float64 cumulative sum inside that block picks the token. The target is kept strictly below each level's
    total, so a zero-probability (masked or truncated) token is never returned.
    """
    batch, vocab = probs.shape
    padded = torch.nn.functional.pad(probs, (0, (-vocab) % _CHUNK))
    blocks = padded.view(batch, -1, _CHUNK)
    block_mass = blocks.sum(dim=-1, dtype=torch.float64)
    block_cdf = block_mass.cumsum(dim=-1)
    total = block_cdf[:, -1:]
    target = torch.minimum(uniforms[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    block = torch.searchsorted(block_cdf, target, right=True).clamp_(max=blocks.shape[1] - 1)
    offset = target - (block_cdf - block_mass).gather(1, block)
    inside = blocks.gather(1, block[:, :, None].expand(batch, 1, _CHUNK)).squeeze(1)
    inside_cdf = inside.cumsum(dim=-1, dtype=torch.float64)
    inside_total = inside_cdf[:, -1:]
    offset = offset.clamp(min=0.0)
    offset = torch.minimum(offset, torch.nextafter(inside_total, torch.zeros_like(inside_total)))
    position = torch.searchsorted(inside_cdf, offset, right=True).clamp_(max=_CHUNK - 1)
    return (block * _CHUNK + position).squeeze(1)
