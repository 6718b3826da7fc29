"""The torch side of ``edgekit.llm.model`` (imported only where torch is wanted)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekit.llm.model import DecoderConfig


def _rope_tables(config: DecoderConfig, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [context, head_dim] in HF's half-split layout (rotate_half), float64 then fp32."""
    half = config.head_dim // 2
    inv = 1.0 / (config.rope_theta ** (torch.arange(half, dtype=torch.float64) / half))
    angles = torch.arange(context, dtype=torch.float64)[:, None] * inv[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


class KVDecoder(nn.Module):
    """forward(input_ids, position_ids, attention_bias, past_key, past_value, logit_positions)
    -> (logits, key, value), the KV contract of ``edgekit.llm.model``."""

    def __init__(self, config: DecoderConfig, weights: dict[str, Any], context: int) -> None:
        super().__init__()
        self.config = config
        self.context = context
        get = lambda name: weights[name].detach().to(torch.float32)  # noqa: E731
        self.embed = nn.Parameter(get("model.embed_tokens.weight"), requires_grad=False)
        head = self.embed if config.tied else get("lm_head.weight")
        # the LM head stays [vocab, hidden] (Gemm with transB): a tied table is stored once
        self.lm_head = self.embed if config.tied else nn.Parameter(head, requires_grad=False)
        self.norm = nn.Parameter(get("model.norm.weight") + config.norm_offset, requires_grad=False)
        self.blocks = nn.ModuleList(_Block(config, weights, f"model.layers.{i}.") for i in range(config.layers))
        cos, sin = _rope_tables(config, context)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, input_ids, position_ids, attention_bias, past_key, past_value, logit_positions):
        x = self.embed[input_ids[0]] * self.config.embed_scale  # [T, hidden]
        cos, sin = self.cos[position_ids[0]], self.sin[position_ids[0]]  # [T, head_dim]
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, cos, sin, attention_bias, past_key[:, i], past_value[:, i])
            keys.append(k)
            values.append(v)
        h = _rms(x[logit_positions], self.norm, self.config.eps)
        logits = h @ self.lm_head.t()
        return logits, torch.stack(keys, dim=1), torch.stack(values, dim=1)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class _Block(nn.Module):
    def __init__(self, config: DecoderConfig, weights: dict[str, Any], prefix: str) -> None:
        super().__init__()
        self.c = config

        def param(name: str, transpose: bool = True) -> nn.Parameter:
            tensor = weights[prefix + name].detach().to(torch.float32)
            return nn.Parameter(tensor.t().contiguous() if transpose else tensor, requires_grad=False)

        def bias(name: str) -> nn.Parameter | None:
            key = prefix + name
            return nn.Parameter(weights[key].detach().float(), requires_grad=False) if key in weights else None

        self.ln1 = nn.Parameter(weights[prefix + "input_layernorm.weight"].float() + config.norm_offset, requires_grad=False)
        self.ln2 = nn.Parameter(weights[prefix + "post_attention_layernorm.weight"].float() + config.norm_offset,
                                requires_grad=False)
        self.wq, self.wk, self.wv, self.wo = (param(f"self_attn.{n}_proj.weight") for n in "qkvo")
        self.bq, self.bk, self.bv = (bias(f"self_attn.{n}_proj.bias") for n in "qkv")
        self.wg, self.wu, self.wd = (param(f"mlp.{n}_proj.weight") for n in ("gate", "up", "down"))

    def forward(self, x, cos, sin, attention_bias, past_k, past_v):
        c = self.c
        t = x.shape[0]
        h = _rms(x, self.ln1, c.eps)
        q, k, v = h @ self.wq, h @ self.wk, h @ self.wv
        if self.bq is not None:
            q, k, v = q + self.bq, k + self.bk, v + self.bv
        q = _rotate(q.reshape(t, c.heads, c.head_dim), cos[:, None], sin[:, None])
        k = _rotate(k.reshape(t, c.kv_heads, c.head_dim), cos[:, None], sin[:, None])
        v = v.reshape(t, c.kv_heads, c.head_dim)
        attn = _attention(c, q, torch.cat([past_k, k]), torch.cat([past_v, v]), attention_bias)
        x = x + attn @ self.wo
        h = _rms(x, self.ln2, c.eps)
        gate = h @ self.wg
        gate = torch.nn.functional.silu(gate) if c.act == "silu" else torch.nn.functional.gelu(gate, approximate="tanh")
        return x + (gate * (h @ self.wu)) @ self.wd, k, v


def _attention(c: DecoderConfig, q, k_all, v_all, attention_bias):
    """Grouped-query attention: q [T, H, d], k/v [S, KV, d], bias [T, S] -> [T, H * d]."""
    t, group = q.shape[0], c.heads // c.kv_heads
    q = q.reshape(t, c.kv_heads, group, c.head_dim).permute(1, 2, 0, 3)  # [KV, G, T, d]
    k = k_all.permute(1, 2, 0)[:, None]  # [KV, 1, d, S]
    v = v_all.permute(1, 0, 2)[:, None]  # [KV, 1, S, d]
    scores = (q @ k) * (c.head_dim ** -0.5) + attention_bias
    out = torch.softmax(scores, dim=-1) @ v  # [KV, G, T, d]
    return out.permute(2, 0, 1, 3).reshape(t, c.heads * c.head_dim)
