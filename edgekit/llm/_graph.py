"""Find the weight matrices of a KV-contract ONNX graph and rewrite them as ORT contrib ops.

The export (``edgekit.llm.export``) writes every projection as ``MatMul(x, W[in, out])`` and the
tied embedding once, as ``lm_head [vocab, hidden]``: the lookup is ``GatherND(lm_head, ids[..., None])``
and the head is ``MatMul(h, Transpose(lm_head))``. The rewrite keeps that single copy: one
``MatMulNBits`` weight, read also by ``GatherBlockQuantized`` through a ``Reshape`` (the way
onnxruntime-genai's builder shares a quantized tied embedding), so the table is stored once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.llm._blockquant import BlockQuant, pack

__all__ = ["Rewrite", "WeightSite", "TiedHead", "weight_sites", "tied_head", "replace_matmul", "replace_tied_head"]

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class WeightSite:
    """A ``MatMul`` on a 2-D float initializer: ``activation @ W`` with W [K, N]."""

    node: str
    weight: str
    activation: str


@dataclass(frozen=True)
class TiedHead:
    """The tied table [vocab, hidden], its head MatMul and its lookup. The exporter writes the head
    as ``MatMul(h, Transpose(table))``, or, when it folds the Transpose (small tables), on a second,
    transposed copy ``folded`` [hidden, vocab]; both end as the one packed table."""

    weight: str
    transpose: str | None
    matmul: str
    activation: str
    lookup: str | None  # the GatherND node, or None if the table is not also the embedding
    folded: str | None = None


def _initializers(model: Any) -> dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def _is_float_matrix(tensor: Any) -> bool:
    return tensor is not None and len(tensor.dims) == 2 and tensor.data_type == 1


def weight_sites(model: Any) -> list[WeightSite]:
    """Every ``MatMul(x, W)`` with W a 2-D fp32 initializer, in graph order."""
    inits = _initializers(model)
    return [WeightSite(n.name, n.input[1], n.input[0]) for n in model.graph.node
            if n.op_type == "MatMul" and _is_float_matrix(inits.get(n.input[1]))]


def tied_head(model: Any) -> TiedHead | None:
    """The tied table's head MatMul and its ``GatherND`` lookup, if the graph has them."""
    inits = _initializers(model)
    nodes = model.graph.node
    for t in nodes:
        if t.op_type != "Transpose" or not _is_float_matrix(inits.get(t.input[0])):
            continue
        users = [n for n in nodes if t.output[0] in n.input]
        if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[1] != t.output[0]:
            continue
        lookups = [n.name for n in nodes if n.op_type == "GatherND" and n.input[0] == t.input[0]]
        return TiedHead(t.input[0], t.name, users[0].name, users[0].input[0], lookups[0] if len(lookups) == 1 else None)
    return _folded_head(model, inits)


def _folded_head(model: Any, inits: dict[str, Any]) -> TiedHead | None:
    """A GatherND table whose exact transpose is some MatMul's weight."""
    from onnx import numpy_helper

    for lookup in (n for n in model.graph.node if n.op_type == "GatherND" and _is_float_matrix(inits.get(n.input[0]))):
        table = inits[lookup.input[0]]
        for site in weight_sites(model):
            w = inits[site.weight]
            if list(w.dims) == list(table.dims)[::-1] and np.array_equal(
                    numpy_helper.to_array(w).T, numpy_helper.to_array(table)):
                return TiedHead(table.name, None, site.node, site.activation, lookup.name, site.weight)
    return None


def _nbits_node(name: str, inputs: list[str], output: str, bq: BlockQuant, accuracy_level: int) -> Any:
    from onnx import helper

    n, k = bq.q.shape
    return helper.make_node("MatMulNBits", inputs, [output], name=name, domain=MS_DOMAIN, K=k, N=n, bits=bq.bits,
                            block_size=bq.block, accuracy_level=accuracy_level)


class Rewrite:
    """Pending changes, applied in one pass (editing a repeated protobuf field in place once per
    matrix copies every initializer each time: gigabytes for a 135 M model)."""

    def __init__(self) -> None:
        self.nodes: dict[str, list[Any]] = {}
        self.tensors: list[Any] = []
        self.drop: set[str] = set()
        self.blocksums: set[str] = set()

    def store(self, bq: BlockQuant, prefix: str, flat: bool) -> list[str]:
        """Add the packed tensors; returns [B, scales(, zero points)] names."""
        from onnx import numpy_helper

        data, scales, zeros = pack(bq)
        tensors = [(f"{prefix}_Q{bq.bits}", data), (f"{prefix}_scales", scales.reshape(-1) if flat else scales)]
        if zeros is not None:
            tensors.append((f"{prefix}_zp", zeros.reshape(-1) if flat else zeros))
        self.tensors.extend(numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in tensors)
        return [name for name, _ in tensors]

    def apply(self, model: Any) -> None:
        nodes = [new for n in model.graph.node for new in self.nodes.get(n.name, [n])]
        inits = [t for t in model.graph.initializer if t.name not in self.drop] + self.tensors
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        del model.graph.initializer[:]
        model.graph.initializer.extend(inits)


def _node(model: Any, name: str) -> Any:
    return next(n for n in model.graph.node if n.name == name)


def _offset_nodes(rw: Rewrite, name: str, activation: str, bq: BlockQuant, out: str) -> list[Any]:
    """``out = partial + blocksum(x) @ offsets^T``; the block sums of one activation are shared."""
    from onnx import helper, numpy_helper

    n, k = bq.q.shape
    sums = f"{activation}_blocksum{bq.block}"
    nodes = []
    if sums not in rw.blocksums:
        rw.blocksums.add(sums)
        rw.tensors.extend([numpy_helper.from_array(np.array([-1, k // bq.block, bq.block], np.int64), f"{sums}_shape"),
                           numpy_helper.from_array(np.array([-1], np.int64), f"{sums}_axis")])
        nodes += [helper.make_node("Reshape", [activation, f"{sums}_shape"], [f"{sums}_blocks"], name=f"{sums}_reshape"),
                  helper.make_node("ReduceSum", [f"{sums}_blocks", f"{sums}_axis"], [sums], name=sums, keepdims=0)]
    rw.tensors.append(numpy_helper.from_array(np.ascontiguousarray(bq.offsets.T), f"{name}_offsets"))
    return nodes + [helper.make_node("MatMul", [sums, f"{name}_offsets"], [f"{name}_offset_out"], name=f"{name}_offset"),
                    helper.make_node("Add", [f"{name}_partial", f"{name}_offset_out"], [out], name=f"{name}_add")]


def _matmul_nodes(rw: Rewrite, name: str, activation: str, bq: BlockQuant, out: str, accuracy_level: int) -> list[Any]:
    names = rw.store(bq, name, flat=True)
    if bq.offsets is None:
        return [_nbits_node(name, [activation, *names], out, bq, accuracy_level)]
    return [_nbits_node(name, [activation, *names], f"{name}_partial", bq, accuracy_level),
            *_offset_nodes(rw, name, activation, bq, out)]


def replace_matmul(rw: Rewrite, model: Any, site: WeightSite, bq: BlockQuant, accuracy_level: int) -> None:
    """``MatMul(x, W)`` -> ``MatMulNBits(x, B, scales, zp)`` (+ the grid offsets); W is dropped."""
    out = _node(model, site.node).output[0]
    rw.nodes[site.node] = _matmul_nodes(rw, site.node, site.activation, bq, out, accuracy_level)
    rw.drop.add(site.weight)


def replace_tied_head(rw: Rewrite, model: Any, head: TiedHead, bq: BlockQuant, accuracy_level: int,
                      residual: BlockQuant | None = None) -> None:
    """Head -> ``MatMulNBits``; lookup -> ``GatherBlockQuantized`` over the same packed weight,
    plus, when given, a ``residual`` table (``table - bq``, symmetric) that only the lookup reads:
    an int4 head whose embeddings keep about 8 bits."""
    names = rw.store(bq, head.weight, flat=False)
    out = _node(model, head.matmul).output[0]
    rw.nodes[head.matmul] = [_nbits_node(head.matmul, [head.activation, *names], out, bq, accuracy_level)]
    if head.transpose is not None:
        rw.nodes[head.transpose] = []
    rw.drop.update({head.weight, head.folded} - {None})
    if head.lookup is None:
        return
    lookup = _node(model, head.lookup)
    rw.nodes[head.lookup] = _lookup_nodes(rw, head, lookup, names, bq, residual)


def _row_views(rw: Rewrite, prefix: str, names: list[str], bq: BlockQuant) -> list[Any]:
    """``GatherBlockQuantized``'s [vocab, blocks, 1] scales (a Reshape of the head's, not a copy)
    and zero points (one unpacked uint8 per block: the op does not read MatMulNBits' packing)."""
    from onnx import helper, numpy_helper

    vocab, hidden = bq.q.shape
    shape = f"{prefix}_scales_rows_shape"
    rw.tensors.append(numpy_helper.from_array(np.array([vocab, hidden // bq.block, 1], np.int64), shape))
    if bq.zeros is not None:
        rw.tensors.append(numpy_helper.from_array(bq.zeros.reshape(vocab, -1, 1).astype(np.uint8), f"{prefix}_zp_rows"))
    return [helper.make_node("Reshape", [names[1], shape], [f"{prefix}_scales_rows"], name=f"{prefix}_scales_view")]


def _gather(prefix: str, data: str, ids: str, bq: BlockQuant, out: str) -> Any:
    from onnx import helper

    inputs = [data, ids, f"{prefix}_scales_rows"] + ([f"{prefix}_zp_rows"] if bq.zeros is not None else [])
    return helper.make_node("GatherBlockQuantized", inputs, [out], name=f"{prefix}_gather", domain=MS_DOMAIN,
                            bits=bq.bits, block_size=bq.block, gather_axis=0, quantize_axis=2)


def _lookup_nodes(rw: Rewrite, head: TiedHead, lookup: Any, names: list[str], bq: BlockQuant,
                  residual: BlockQuant | None) -> list[Any]:
    """The embedding lookup on the head's own packed table B [vocab, blocks, blob]: gathered as
    [..., blocks, block] rows, then reshaped to [..., hidden]. Gathering on a [vocab, hidden]
    Reshape of B instead made ONNX Runtime's constant folding store the table twice (the .ort
    file +28 MB for SmolLM2, and the session's memory)."""
    from onnx import helper, numpy_helper

    hidden = bq.q.shape[1]
    axes, ids = f"{head.weight}_last_axis", f"{head.lookup}_ids"
    blocks, shape = f"{head.lookup}_blocks", f"{head.lookup}_shape"
    rw.tensors.extend([numpy_helper.from_array(np.array([-1], np.int64), axes),
                       numpy_helper.from_array(np.array([hidden], np.int64), f"{head.weight}_hidden")])
    # GatherND with indices [..., 1] is Gather on the squeezed indices
    nodes = [helper.make_node("Squeeze", [lookup.input[1], axes], [ids], name=f"{head.lookup}_squeeze"),
             *_row_views(rw, head.weight, names, bq)]
    if residual is None:
        nodes.append(_gather(head.weight, names[0], ids, bq, blocks))
    else:
        extra = rw.store(residual, f"{head.weight}_residual", flat=False)
        nodes += [*_row_views(rw, f"{head.weight}_residual", extra, residual),
                  _gather(head.weight, names[0], ids, bq, f"{blocks}_head"),
                  _gather(f"{head.weight}_residual", extra[0], ids, residual, f"{blocks}_residual"),
                  helper.make_node("Add", [f"{blocks}_head", f"{blocks}_residual"], [blocks], name=f"{head.lookup}_sum")]
    return nodes + [
        helper.make_node("Shape", [ids], [f"{shape}_ids"], name=f"{head.lookup}_ids_shape"),
        helper.make_node("Concat", [f"{shape}_ids", f"{head.weight}_hidden"], [shape], name=f"{head.lookup}_out_shape", axis=0),
        helper.make_node("Reshape", [blocks, shape], [lookup.output[0]], name=f"{head.lookup}_rows")]


def concat_rows(parts: list[BlockQuant]) -> BlockQuant:
    """One weight whose output rows are ``parts``' rows in order (same bits, block, zero points)."""
    zeros = None if parts[0].zeros is None else np.concatenate([p.zeros for p in parts])
    offsets = None if parts[0].offsets is None else np.concatenate([p.offsets for p in parts])
    picks: dict[str, int] = {}
    for p in parts:
        for name, count in p.picks:
            picks[name] = picks.get(name, 0) + count
    return BlockQuant(np.concatenate([p.q for p in parts]), np.concatenate([p.scales for p in parts]), zeros,
                      parts[0].bits, parts[0].block, tuple(sorted(picks.items())), offsets)


def replace_fused(rw: Rewrite, model: Any, sites: list[WeightSite], parts: list[BlockQuant], accuracy_level: int) -> None:
    """MatMuls reading the same activation (q/k/v, gate/up) -> one ``MatMulNBits`` and a Split:
    one kernel call per group instead of one per matrix, which is what a one-token decode step
    pays for (the packed bytes are the same)."""
    from onnx import helper, numpy_helper

    first = sites[0]
    fused = concat_rows(parts)
    sizes = f"{first.weight}_fused_split"
    rw.tensors.append(numpy_helper.from_array(np.array([p.q.shape[0] for p in parts], np.int64), sizes))
    outputs = [_node(model, s.node).output[0] for s in sites]
    rw.nodes[first.node] = [
        *_matmul_nodes(rw, f"{first.node}_fused", first.activation, fused, f"{first.node}_fused_out", accuracy_level),
        helper.make_node("Split", [f"{first.node}_fused_out", sizes], outputs, name=f"{first.node}_split", axis=-1)]
    for s in sites[1:]:
        rw.nodes[s.node] = []
    rw.drop.update(s.weight for s in sites)
