"""StorytellerModel: a small causal GPT for the story corpus, and the named presets the pages use.

A pre-LayerNorm Transformer decoder (GPT-2 layout): token and learned position embeddings, then
``n_layer`` blocks ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``, a final LayerNorm and a
language-model head tied to the token embedding. Attention is causal through
``F.scaled_dot_product_attention(..., is_causal=True)``, so position ``t`` never sees ``t' > t``
(``tests/test_model.py`` checks this exactly for every ``t``). Weights follow GPT-2's scheme via
``storyopt_lib.initializers.init_weights(model, "gpt2")``: N(0, 0.02²), and the two residual
output projections of each block (``is_residual_projection = True``) N(0, (0.02 / sqrt(2 L))²).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .initializers import init_weights

__all__ = [
    "PRESETS",
    "CausalSelfAttention",
    "ModelConfig",
    "Preset",
    "StorytellerModel",
    "get_preset",
]


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name}: {name}={value!r} (must be an integer >= {minimum})")


@dataclass
class ModelConfig:
    """Shape of a ``StorytellerModel``.

    Args:
        vocab_size: number of token ids ``V``.
        block_size: longest context ``T`` (learned positions ``0..T-1``).
        d_model: width ``d``; must be divisible by ``n_head``.
        n_head: attention heads (each of width ``d / n_head``).
        n_layer: Transformer blocks ``L``.
        dropout: dropout probability on embeddings, attention weights and residual branches.
        tie_weights: share the LM head's weight with the token embedding.
        grad_checkpointing: recompute each block's activations in the backward pass.

    Example:
        >>> ModelConfig(vocab_size=100, block_size=64, d_model=64, n_head=4, n_layer=2).head_dim
        16
    """

    vocab_size: int
    block_size: int
    d_model: int
    n_head: int
    n_layer: int
    dropout: float = 0.0
    tie_weights: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, 1)
        _check_int("block_size", self.block_size, 1)
        _check_int("d_model", self.d_model, 1)
        _check_int("n_head", self.n_head, 1)
        _check_int("n_layer", self.n_layer, 1)
        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"Invalid d_model: d_model={self.d_model} is not divisible by n_head={self.n_head}"
            )
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"Invalid dropout: dropout={self.dropout!r} (must be in [0, 1))")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` attends to positions ``0..t`` only."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.proj.is_residual_projection = True
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim)
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    """``proj(GELU(fc(x)))`` with a 4x hidden width."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, 4 * config.d_model)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * config.d_model, config.d_model)
        self.proj.is_residual_projection = True
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class StorytellerModel(nn.Module):
    """A small GPT that tells stories one character at a time.

    ``forward(idx, targets)`` returns ``(logits, loss)`` with ``logits`` of shape ``(B, T, V)`` and
    ``loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)`` averaged over all
    ``B * T`` positions (``None`` without targets).

    Args:
        config: a ``ModelConfig``.

    Example:
        >>> cfg = ModelConfig(vocab_size=50, block_size=16, d_model=32, n_head=4, n_layer=2)
        >>> model = StorytellerModel(cfg)
        >>> logits, loss = model(torch.zeros(2, 8, dtype=torch.long))
        >>> tuple(logits.shape), loss
        ((2, 8, 50), None)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        init_weights(self, "gpt2", std=0.02, n_layer=config.n_layer)

    def _check_idx(self, idx: torch.Tensor) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            raise ValueError(
                "Invalid idx: expected a LongTensor of shape (batch, time), got "
                f"{getattr(idx, 'dtype', type(idx).__name__)} of shape "
                f"{tuple(getattr(idx, 'shape', ()))}"
            )
        T = idx.shape[1]
        if not 1 <= T <= self.config.block_size:
            raise ValueError(
                f"Invalid idx: sequence length {T} (must be between 1 and "
                f"block_size={self.config.block_size})"
            )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check_idx(idx)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(
                f"Invalid label_smoothing: label_smoothing={label_smoothing!r} (must be in [0, 1])"
            )
        if targets is not None and targets.shape != idx.shape:
            raise ValueError(
                f"Invalid targets: shape {tuple(targets.shape)} differs from idx {tuple(idx.shape)}"
            )
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, d)
        use_ckpt = self.config.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            # Non-reentrant checkpoint: keeps only the block input, recomputes the rest on backward.
            x = checkpoint(block, x, use_reentrant=False) if use_ckpt else block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)),
                targets.reshape(-1),
                label_smoothing=label_smoothing,
            )
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T) and return (B, T + n).

        Each step samples from ``softmax(logits_last / temperature)`` restricted to the ``top_k``
        most likely tokens (all when ``None``; at most ``V``), using only the last ``block_size``
        tokens as context. The model runs in eval mode (no dropout); its mode is restored after.

        Args:
            idx: prompt ids, a LongTensor (B, T) with ``1 <= T``.
            max_new_tokens: number of tokens to add (>= 0).
            temperature: > 0; lower is greedier.
            top_k: keep the ``top_k`` most likely tokens (>= 1) or ``None``.
            generator: a ``torch.Generator`` for reproducible sampling.
        """
        _check_int("max_new_tokens", max_new_tokens, 0)
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"Invalid temperature: temperature={temperature!r} (must be > 0)")
        if top_k is not None:
            _check_int("top_k", top_k, 1)
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            raise ValueError("Invalid idx: expected a LongTensor of shape (batch, time)")
        if idx.shape[1] < 1:
            raise ValueError("Invalid idx: the prompt is empty (give at least one token)")
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                logits, _ = self(idx[:, -self.config.block_size :])
                logits = logits[:, -1, :] / temperature
                if top_k is not None and top_k < logits.size(-1):
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
                idx = torch.cat([idx, nxt], dim=1)
        finally:
            self.train(was_training)
        return idx

    def generate_text(
        self,
        tokenizer: Any,
        prompt: str = "",
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        stop_at_eos: bool = True,
    ) -> str:
        """Continue ``prompt`` as a story: ``prompt`` plus the sampled characters.

        The context starts with the end-of-story token, as every story after the first does in
        training. ``tokenizer.encode`` raises ``ValueError`` for characters it does not know
        (unless it maps them to ``<unk>``). With ``stop_at_eos`` the text ends before the first
        end-of-story token sampled.

        Example:
            >>> # model.generate_text(tok, "从前，", max_new_tokens=100, seed=0)
        """
        ids = [tokenizer.eos_id, *tokenizer.encode(prompt)]
        device = next(self.parameters()).device
        gen = None
        if seed is not None:
            gen = torch.Generator(device=device).manual_seed(seed)
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        out = self.generate(idx, max_new_tokens, temperature, top_k, gen)[0, len(ids) :].tolist()
        if stop_at_eos and tokenizer.eos_id in out:
            out = out[: out.index(tokenizer.eos_id)]
        return prompt + tokenizer.decode(out)

    def num_params(self) -> int:
        """Number of distinct parameters (a tied head is counted once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), the estimate of Kaplan et al. / PaLM:

            flops_per_token = 6 * N + 12 * n_layer * d_model * seq_len

        ``6 N``: each of the ``N`` weights (all parameters except the position embedding, whose
        lookup costs nothing; the tied head's matmul is counted through the embedding) does one
        multiply-add (2 FLOPs) forward and two backward. ``12 L d T``: the attention scores
        ``Q K^T`` and the weighted sum ``A V`` cost ``2 * 2 * d * T`` FLOPs per token and layer
        forward, times 3 for forward + backward (the causal mask's halving is ignored, as is usual).

        Args:
            seq_len: context length ``T`` (default ``block_size``).
        """
        T = self.config.block_size if seq_len is None else seq_len
        _check_int("seq_len", T, 1)
        n = self.num_params() - self.pos_emb.weight.numel()
        return 6 * n + 12 * self.config.n_layer * self.config.d_model * T


@dataclass(frozen=True)
class Preset:
    """A named model + data size that the pages use.

    ``n_stories`` stories from ``generate_stories`` make the corpus (``data.story_datasets``).
    """

    name: str
    d_model: int
    n_head: int
    n_layer: int
    block_size: int
    batch_size: int
    n_stories: int

    def model_config(self, vocab_size: int, **overrides: Any) -> ModelConfig:
        """``ModelConfig`` of this preset; ``overrides`` replace any of its fields.

        Example:
            >>> get_preset("tiny").model_config(100, dropout=0.1).dropout
            0.1
        """
        fields = {
            "vocab_size": vocab_size,
            "block_size": self.block_size,
            "d_model": self.d_model,
            "n_head": self.n_head,
            "n_layer": self.n_layer,
        }
        unknown = set(overrides) - set(asdict(ModelConfig(1, 1, 1, 1, 1)))
        if unknown:
            raise ValueError(f"Unknown ModelConfig field(s) in overrides: {sorted(unknown)}")
        fields.update(overrides)
        return ModelConfig(**fields)

    def replace(self, **changes: Any) -> Preset:
        """A copy with some fields changed (e.g. a smaller ``n_stories`` for a quick demo)."""
        return replace(self, **changes)


# Sized for a 300-update run in about 20 s or less on a 2-core CPU (fp32, AdamW, fwd + bwd):
# "tiny" (0.13 M parameters) about 35-60 ms per update, "small" (0.86 M) about 2.5x tiny per token,
# hence its smaller batch. Building either corpus takes about 1 s.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        "tiny", d_model=64, n_head=4, n_layer=2, block_size=64, batch_size=32, n_stories=4000
    ),
    "small": Preset(
        "small", d_model=128, n_head=4, n_layer=4, block_size=64, batch_size=8, n_stories=8000
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (``"tiny"`` or ``"small"``)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset: name={name!r} (valid: {', '.join(PRESETS)})")
    return PRESETS[name]
