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
        #: True: RMSNormalization / RotaryEmbedding / Attention, the opset-23 ops ONNX Runtime runs
        #: fused (a third of the nodes, most of the per-token overhead gone); False: plain ops
        #: only, for converters that do not know opset 23 (onnx2tf)
        self.fused = True
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
        x = self.embed[input_ids] * self.config.embed_scale  # [1, T, hidden]
        rope = _Rope(self.cos, self.sin, position_ids, self.fused)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, rope, attention_bias, past_key[:, i], past_value[:, i], self.fused)
            keys.append(k)
            values.append(v)
        h = _rms(x[0, logit_positions], self.norm, self.config.eps, self.fused)
        logits = h @ self.lm_head.t()
        return logits, torch.stack(keys, dim=1), torch.stack(values, dim=1)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float, fused: bool) -> torch.Tensor:
    if fused:
        return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class _Rope:
    """Rotary embedding for one step's positions, as one RotaryEmbedding op or plain ops."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, position_ids: torch.Tensor, fused: bool) -> None:
        half = cos.shape[-1] // 2
        self.fused, self.position_ids = fused, position_ids
        self.cache = (cos[:, :half], sin[:, :half])  # the op's cache: [context, head_dim / 2]
        self.cos, self.sin = cos[position_ids[0]][:, None], sin[position_ids[0]][:, None]  # [T, 1, head_dim]

    def __call__(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """x [1, T, heads * head_dim] -> the same, rotated."""
        if self.fused:
            return torch.onnx.ops.rotary_embedding(x, *self.cache, self.position_ids, interleaved=False, num_heads=heads)
        t = x.shape[1]
        return _rotate(x.reshape(t, heads, -1), self.cos, self.sin).reshape(1, t, -1)


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
        # q, k and v (and gate and up) as one MatMul each: fewer, larger GEMMs, the same
        # per-output-column quantization blocks as the separate matrices
        self.wqkv = nn.Parameter(torch.cat([param(f"self_attn.{n}_proj.weight") for n in "qkv"], dim=1), requires_grad=False)
        biases = [bias(f"self_attn.{n}_proj.bias") for n in "qkv"]
        self.bqkv = nn.Parameter(torch.cat(biases), requires_grad=False) if biases[0] is not None else None
        self.wo = param("self_attn.o_proj.weight")
        self.wgu = nn.Parameter(torch.cat([param("mlp.gate_proj.weight"), param("mlp.up_proj.weight")], dim=1),
                                requires_grad=False)
        self.wd = param("mlp.down_proj.weight")

    def forward(self, x, rope, attention_bias, past_k, past_v, fused):
        c = self.c
        t, kv_width = x.shape[1], c.kv_heads * c.head_dim
        qkv = _rms(x, self.ln1, c.eps, fused) @ self.wqkv
        if self.bqkv is not None:
            qkv = qkv + self.bqkv
        q, k, v = qkv.split([c.heads * c.head_dim, kv_width, kv_width], dim=-1)
        q, k = rope(q, c.heads), rope(k, c.kv_heads)  # [1, T, heads * head_dim]
        k_all = torch.cat([past_k.reshape(1, -1, kv_width), k], dim=1)
        v_all = torch.cat([past_v.reshape(1, -1, kv_width), v], dim=1)
        if fused:
            attn = torch.onnx.ops.attention(q, k_all, v_all, attention_bias, q_num_heads=c.heads, kv_num_heads=c.kv_heads,
                                            scale=c.head_dim ** -0.5)[0]
        else:
            attn = _attention(c, q, k_all, v_all, attention_bias)
        x = x + attn @ self.wo
        gate, up = (_rms(x, self.ln2, c.eps, fused) @ self.wgu).split([c.intermediate, c.intermediate], dim=-1)
        gate = torch.nn.functional.silu(gate) if c.act == "silu" else torch.nn.functional.gelu(gate, approximate="tanh")
        return x + (gate * up) @ self.wd, k.reshape(t, c.kv_heads, c.head_dim), v.reshape(t, c.kv_heads, c.head_dim)


def _attention(c: DecoderConfig, q, k_all, v_all, attention_bias):
    """Grouped-query attention in plain ops: q [1, T, H*d], k/v [1, S, KV*d], bias [T, S] -> [1, T, H*d]."""
    q, k_all, v_all = q[0].reshape(q.shape[1], c.heads, -1), k_all[0].reshape(k_all.shape[1], c.kv_heads, -1), \
        v_all[0].reshape(v_all.shape[1], c.kv_heads, -1)
    t, group = q.shape[0], c.heads // c.kv_heads
    q = q.reshape(t, c.kv_heads, group, c.head_dim).permute(1, 2, 0, 3)  # [KV, G, T, d]
    k = k_all.permute(1, 2, 0)[:, None]  # [KV, 1, d, S]
    v = v_all.permute(1, 0, 2)[:, None]  # [KV, 1, S, d]
    scores = (q @ k) * (c.head_dim ** -0.5) + attention_bias
    out = torch.softmax(scores, dim=-1) @ v  # [KV, G, T, d]
    return out.permute(2, 0, 1, 3).reshape(1, t, c.heads * c.head_dim)
