"""A small character-level GPT in the style of nanoGPT, trained on the text in `data/`.

    entry: {task: "hpcgpu.examples.gpt:make_task", task_args: {n_layer: 4, n_embd: 256}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from hpcgpu.contract.errors import UserError
from hpcgpu.worker.task import Task

DATA = Path(__file__).parent / "data" / "corpus.txt"


@dataclass
class GPTConfig:
    """Model shape (nanoGPT's names)."""

    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.n_head, self.dropout = cfg.n_head, cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.n_embd), CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token and position embeddings, n_layer pre-norm blocks, a tied output head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying, as in GPT-2
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters (without position embeddings by default, as in nanoGPT's MFU estimate)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos.weight.numel() if non_embedding else n


def flops_per_token(cfg: GPTConfig, n_params: int) -> float:
    """Training FLOPs per token: 6N for the weights plus 12·L·H·Q·T for attention (PaLM, appendix B)."""
    head_dim = cfg.n_embd // cfg.n_head
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_head * head_dim * cfg.block_size


def mfu(cfg: GPTConfig, n_params: int, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the device's peak (e.g. 989e12 for H100 bf16)."""
    return flops_per_token(cfg, n_params) * tokens_per_s / peak_flops


class CharDataset(Dataset):
    """Windows of block_size characters; item i is (text[s:s+T], text[s+1:s+T+1]) with s = i * stride."""

    def __init__(self, data: torch.Tensor, block_size: int, stride: int):
        self.data, self.block_size, self.stride = data, block_size, stride

    def __len__(self) -> int:
        return (len(self.data) - self.block_size - 1) // self.stride + 1

    def __getitem__(self, i: int):
        s = i * self.stride
        chunk = self.data[s:s + self.block_size + 1]
        return chunk[:-1], chunk[1:]


def encode(text: str) -> tuple[torch.Tensor, list[str]]:
    """Characters -> ids over the sorted set of characters in the text."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), chars


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def make_task(block_size: int = 128, n_layer: int = 4, n_head: int = 4, n_embd: int = 128,
              dropout: float = 0.0, stride: Optional[int] = None, warmup_steps: int = 20,
              text_file: Optional[str] = None, eval_fraction: float = 0.1) -> Task:
    """Task factory for `entry.task: hpcgpu.examples.gpt:make_task`.

    eval_fraction: the tail of the text held out for evaluation (non-overlapping windows; 0: none)."""
    data, chars = encode(Path(text_file or DATA).read_text(encoding="utf-8"))
    cut = len(data) - int(len(data) * eval_fraction) if eval_fraction > 0 else len(data)
    if cut < len(data) and len(data) - cut < block_size + 1:
        raise UserError(f"eval_fraction {eval_fraction} holds out {len(data) - cut} characters, fewer than one "
                        f"window of block_size {block_size} + 1: raise eval_fraction or give 0")
    cfg = GPTConfig(len(chars), block_size, n_layer, n_head, n_embd, dropout)
    with torch.device("meta"):  # count parameters without allocating or touching the RNG
        n_params = GPT(cfg).num_params()
    return Task(
        model=lambda: GPT(cfg),
        dataset=CharDataset(data[:cut], block_size, stride or block_size // 2),
        loss=_loss,
        lr_schedule=lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0,
        shard_units=lambda model: list(model.blocks),
        flops_per_sample=flops_per_token(cfg, n_params) * block_size,
        # held-out windows that do not overlap: each character is scored once (the loss is the
        # mean per-token cross-entropy, the same for every window, so the set's mean is exact)
        eval_dataset=CharDataset(data[cut:], block_size, block_size) if cut < len(data) else None,
    )
