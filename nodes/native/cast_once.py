"""Streamed weights cast once per block call. Under partial loading (or weights stored in another dtype) the
host's layers cast their weights to the compute device and dtype at every call; a FlashVideo block calls its
per-token layers once for the text and once per video token chunk (and the output layers run per chunk), so each
would cast several times. Here those layers get their weights cast once, with the host's own cast (and its LoRA
weight functions), for the duration of the call."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import comfy.ops


def streamed_layers(modules) -> list:
    """The Linear and LayerNorm layers in ``modules`` the host casts at each call with its plain cast; layers
    with a cast of their own (scaled fp8, quantised formats) keep the host's path."""
    plain = {torch.nn.Linear: comfy.ops.disable_weight_init.Linear.forward_comfy_cast_weights,
             torch.nn.LayerNorm: comfy.ops.disable_weight_init.LayerNorm.forward_comfy_cast_weights}
    return [m for module in modules for m in module.modules()
            if any(isinstance(m, kind) and getattr(type(m), "forward_comfy_cast_weights", None) is cast
                   for kind, cast in plain.items())
            and m.weight is not None
            and (m.comfy_cast_weights or m.weight_function or m.bias_function)]


def call_casting_once(modules, like: torch.Tensor, call):
    """``call()`` with the streamed layers of ``modules`` (a block, or the output layers that also run per chunk)
    using weights cast once, to ``like``'s dtype and device."""
    layers = streamed_layers(modules)
    if not layers:
        return call()
    releasable = hasattr(comfy.ops, "uncast_bias_weight")  # 0.33: cast weights are released after use
    cast = []
    try:
        for layer in layers:
            if releasable:
                weight, bias, stream = comfy.ops.cast_bias_weight(layer, like, offloadable=True)
            else:
                (weight, bias), stream = comfy.ops.cast_bias_weight(layer, like), None
            cast.append((layer, weight, bias, stream))
            layer.forward = _with_weights(layer, weight, bias)
        return call()
    finally:
        for layer, weight, bias, stream in cast:
            del layer.forward  # the class's forward again
            if releasable:
                comfy.ops.uncast_bias_weight(layer, weight, bias, stream)


def _with_weights(layer, weight, bias):
    if isinstance(layer, torch.nn.LayerNorm):
        return lambda x: F.layer_norm(x, layer.normalized_shape, weight, bias, layer.eps)
    return lambda x: F.linear(x, weight, bias)
