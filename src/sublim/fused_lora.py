"""A LoRA layer's forward and backward in fewer passes over its activations (sizing fused_lora).

PEFT computes `base(x) + lora_B(lora_A(x)) * scaling` as four kernels over the layer's output
(the low-rank product, the scaling, the sum, and their gradients again in the backward), and adds
the two input gradients in a fifth. Here the low-rank product is added into the base output by the
matmul itself (`addmm_`: C += U·Bᵀ in the GEMM's epilogue), and the backward adds the LoRA input
gradient into the base one the same way. Same function; the sum is rounded once instead of per
term. The adapter's weights are cast to the matmuls' dtype once per optimizer step, not once per
micro-batch, and a LoRA scale of 1 (the presets' alpha = r) multiplies nothing: fewer small kernels
for the host to launch, the same values. The adapter's gradients come out of their GEMMs in the
adapter's float32 on CUDA (no rounding to bf16 and no cast kernel after), and a step's later
micro-batches add theirs into the gradient already there inside the GEMM (no separate sum):
Megatron's gradient-accumulation fusion, for the LoRA weights. Training only: `FusedLoraLayers` swaps the layers' forward
when training begins, forgets the casts when each optimizer step begins, and gives PEFT's forward
back when training ends (saving, merging and generation see PEFT's own layers).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from transformers import TrainerCallback


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the layer's matmuls run in: autocast's where it is on, else the input's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


class LoraLinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b + s (x Aᵀ) Bᵀ with W, b frozen; gradients for x, A and B. `a` and `b_scaled` are
    A and s·B in the matmuls' dtype (`adapter_weights`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, a, b_scaled):
        dtype = a.dtype
        with torch.autocast(x.device.type, enabled=False):
            x2d = x.reshape(-1, x.shape[-1]).to(dtype)
            weight = weight.to(dtype)
            out = F.linear(x2d, weight, None if bias is None else bias.to(dtype))
            low_rank = x2d @ a.t()
            out.addmm_(low_rank, b_scaled.t())
        ctx.save_for_backward(x2d, weight, a, b_scaled, low_rank)
        ctx.scaling, ctx.x_shape, ctx.x_dtype = scaling, x.shape, x.dtype
        ctx.lora_params = (lora_a, lora_b)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x2d, weight, a, b_scaled, low_rank = ctx.saved_tensors
        lora_a, lora_b = ctx.lora_params
        with torch.autocast(x2d.device.type, enabled=False):
            g = grad_out.reshape(-1, grad_out.shape[-1]).to(x2d.dtype)
            grad_b = weight_grad(g.t(), low_rank, lora_b, ctx.scaling)
            grad_low_rank = g @ b_scaled
            grad_a = weight_grad(grad_low_rank.t(), x2d, lora_a)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = (g @ weight).addmm_(grad_low_rank, a).view(ctx.x_shape).to(ctx.x_dtype)
        return grad_x, None, None, grad_a, grad_b, None, None, None


def gemm_writes_float32(m1: torch.Tensor, param: torch.Tensor) -> bool:
    """Whether the GEMM itself can write `param`'s float32 gradient from bf16/fp16 factors
    (torch's mm/addmm with out_dtype: CUDA only)."""
    return m1.is_cuda and param.dtype == torch.float32 and m1.dtype in (torch.bfloat16, torch.float16)


def weight_grad(m1: torch.Tensor, m2: torch.Tensor, param: torch.Tensor, scale: float = 1.0) -> torch.Tensor | None:
    """scale · m1 @ m2 as `param`'s gradient. Where `param` already holds one (a step's later
    micro-batches) it is added there in place and None goes back to autograd, which then adds
    nothing; else the gradient is returned in `param`'s dtype, for autograd to keep as is. A hook on
    `param` does not see the in-place sums (none is registered on the adapters in training)."""
    held = param.grad
    if held is not None and not (held.dtype == param.dtype and held.is_contiguous()):
        held = None  # an unusual gradient: autograd's own sum
    if gemm_writes_float32(m1, param):
        if held is not None:
            torch.addmm(held, m1, m2, out_dtype=torch.float32, alpha=scale, out=held)
            return None
        grad = torch.mm(m1, m2, out_dtype=torch.float32)
        return grad if scale == 1 else grad.mul_(scale)
    grad = m1 @ m2  # rounded to the matmul's dtype, as PEFT's gradients are
    if scale != 1:
        grad.mul_(scale)
    grad = grad.to(param.dtype)
    if held is not None:
        held.add_(grad)
        return None
    return grad


def adapter_weights(layer, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A and s·B of `layer`'s adapter in `dtype`, cast once and kept until `forget_casts`."""
    cached = layer.adapter_casts.get(dtype)
    if cached is None:
        scaling = layer.scaling[name]
        with torch.no_grad():
            a, b = layer.lora_A[name].weight.detach(), layer.lora_B[name].weight.detach()
            cached = layer.adapter_casts[dtype] = (a.to(dtype), (b if scaling == 1 else b * scaling).to(dtype))
    return cached


def forget_casts(layers: list) -> None:
    """Drop the kept casts: call it whenever the adapters' weights or scales may have changed."""
    for layer in layers:
        layer.adapter_casts.clear()


def fusable(layer) -> bool:
    """A PEFT LoRA Linear this module can run: one plain adapter, no dropout, frozen base, unmerged."""
    from peft.tuners.lora.layer import Linear

    if not isinstance(layer, Linear) or layer.merged or layer.disable_adapters:
        return False
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    return (len(active) == 1 and active[0] not in layer.lora_variant
            and isinstance(layer.lora_dropout[active[0]], torch.nn.Identity)
            and not layer.base_layer.weight.requires_grad and not getattr(layer, "fan_in_fan_out", False)
            and (layer.base_layer.bias is None or not layer.base_layer.bias.requires_grad))


def fused_forward(self, x, *args, **kwargs):
    # fuse() checked the layer; a merge or disabled adapters since, or extra arguments: PEFT's forward
    if args or kwargs or self.merged or self.disable_adapters:
        return type(self).forward(self, x, *args, **kwargs)
    name = self.fused_adapter
    a, b_scaled = adapter_weights(self, name, compute_dtype(x))
    return LoraLinearFunction.apply(x, self.base_layer.weight, self.base_layer.bias, self.lora_A[name].weight,
                                    self.lora_B[name].weight, self.scaling[name], a, b_scaled)


def fuse(model) -> list:
    """Swap the forward of every fusable LoRA layer of `model`; returns the layers swapped. Their
    adapters' casts are kept from one forward to the next: `forget_casts` after every weight update."""
    layers = [m for m in model.modules() if fusable(m)]
    for layer in layers:
        layer.fused_adapter = next(name for name in layer.active_adapters if name in layer.lora_A)
        layer.adapter_casts = {}
        layer.forward = types.MethodType(fused_forward, layer)
    return layers


def unfuse(layers: list) -> None:
    for layer in layers:
        # the instance attributes: the class's (PEFT's) forward again
        del layer.forward, layer.fused_adapter, layer.adapter_casts


class FusedLoraLayers(TrainerCallback):
    """Fused LoRA layers for the whole training, PEFT's own afterwards; the adapters' casts last one
    optimizer step (its micro-batches), forgotten when the next begins and after the update."""

    def __init__(self):
        self._layers = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._layers = fuse(model)

    def on_step_begin(self, args, state, control, **kwargs):
        forget_casts(self._layers)

    def on_optimizer_step(self, args, state, control, **kwargs):
        forget_casts(self._layers)

    def on_train_end(self, args, state, control, **kwargs):
        unfuse(self._layers)
        self._layers = []
