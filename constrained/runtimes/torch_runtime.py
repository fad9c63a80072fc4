"""A Hugging Face causal LM as a `ModelRuntime`: one left-padded `DynamicCache` for the whole batch.

Rows of different lengths share the cache by left padding: an attention mask hides the padding and explicit
position ids keep each row's positions. Appending rows pads whichever side is shorter; dropping rows also
drops the columns that became padding in every row.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


class TorchRuntime:
    def __init__(self, model: torch.nn.Module, *, context_window: int | None = None) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        self.context_window = context_window or int(getattr(model.config, "max_position_embeddings", 2048))
        self.reset()

    @property
    def rows(self) -> int:
        return int(self._positions.shape[0])

    def reset(self) -> None:
        self._cache: DynamicCache | None = None
        self._attention = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self._positions = torch.zeros(0, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], copies: list[int]) -> torch.Tensor:
        width = max(map(len, prompts))
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        attention = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention[i, width - len(prompt) :] = 1
        ids, attention = ids.to(self.device), attention.to(self.device)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=(attention.cumsum(dim=1) - 1).clamp(min=0),
            cache=cache,
            use_cache=True,
        )
        expand = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(copies)).to(self.device)
        if len(expand) != len(prompts):
            cache = DynamicCache(
                [
                    (layer.keys.index_select(0, expand), layer.values.index_select(0, expand))
                    for layer in cache.layers
                ]
            )
            attention = attention.index_select(0, expand)
        positions = torch.tensor([len(prompts[i]) for i in expand.tolist()], device=self.device)
        self._append(cache, attention, positions)
        return out.logits[:, -1, :].float().index_select(0, expand)

    @torch.inference_mode()
    def decode(self, tokens: list[list[int]]) -> torch.Tensor:
        """Rows feeding fewer tokens than the longest are left-padded inside this step (masked out)."""
        width = max(map(len, tokens))
        if width == 1:
            ids = torch.tensor([row[0] for row in tokens], dtype=torch.long, device=self.device)[:, None]
            attention = torch.ones(len(tokens), 1, dtype=torch.long, device=self.device)
            positions = self._positions[:, None]
        else:
            ids = torch.zeros(len(tokens), width, dtype=torch.long)
            attention = torch.zeros(len(tokens), width, dtype=torch.long)
            offsets = torch.zeros(len(tokens), width, dtype=torch.long)
            for r, row in enumerate(tokens):
                ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                attention[r, width - len(row) :] = 1
                offsets[r, width - len(row) :] = torch.arange(len(row))
            ids, attention = ids.to(self.device), attention.to(self.device)
            positions = self._positions[:, None] + offsets.to(self.device)
        self._attention = torch.cat([self._attention, attention], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self._attention,
            position_ids=positions,
            cache=self._cache,
            use_cache=True,
        )
        self._positions = self._positions + torch.tensor([len(row) for row in tokens], device=self.device)
        return out.logits[:, -1, :].float()

    def keep(self, rows: list[int]) -> None:
        if len(rows) == self.rows:
            return
        if not rows:
            self.reset()
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        attention = self._attention.index_select(0, index)
        start = int((attention.sum(dim=0) > 0).nonzero()[0])  # drop columns that are padding in every row
        self._cache = DynamicCache(
            [
                (
                    layer.keys.index_select(0, index)[:, :, start:],
                    layer.values.index_select(0, index)[:, :, start:],
                )
                for layer in self._cache.layers
            ]
        )
        self._attention = attention[:, start:]
        self._positions = self._positions.index_select(0, index)

    def _append(self, cache: DynamicCache, attention: torch.Tensor, positions: torch.Tensor) -> None:
        """Append prefilled rows to the batch, left-padding whichever KV cache is shorter."""
        if self._cache is None or self.rows == 0:
            self._cache, self._attention, self._positions = cache, attention, positions
            return
        width = max(self._attention.shape[1], attention.shape[1])
        self._cache = DynamicCache(
            [
                (
                    torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)], dim=0),
                    torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)], dim=0),
                )
                for old, new in zip(self._cache.layers, cache.layers, strict=True)
            ]
        )
        self._attention = torch.cat(
            [_left_pad_mask(self._attention, width), _left_pad_mask(attention, width)], dim=0
        )
        self._positions = torch.cat([self._positions, positions])


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a [batch, heads, time, dim] cache tensor with zeros to `width` time steps."""
    missing = width - tensor.shape[2]
    if missing == 0:
        return tensor
    pad = tensor.new_zeros(tensor.shape[0], tensor.shape[1], missing, tensor.shape[3])
    return torch.cat([pad, tensor], dim=2)


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros(mask.shape[0], missing), mask], dim=1)
