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
Megatron's gradient-accumulation fusion, for the LoRA weights. Sibling layers that their module
calls one after another on the same input (attention's q, k and v; the MLP's gate and up) run as one
autograd node (`LoraGroup`): one low-rank GEMM against their stacked A matrices instead of one each,
one for the A matrices' gradients, and their input gradients summed inside a chain of GEMMs instead of
by autograd's add kernels afterwards: fewer passes over the layers' input and its gradient (1.01-1.03x
at 7b-32b on an H200, benchmarks/README.md "Twenty-second session"). Training only: `FusedLoraLayers`
swaps the layers' forward when training begins, forgets the casts when each optimizer step begins,
and gives PEFT's forward back when training ends (saving, merging and generation see PEFT's own layers).
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


class GroupLoraFunction(torch.autograd.Function):
    """k LoRA layers on one input x: y_i = x W_iᵀ + b_i + (x Aᵀ)[:, r_i] s_i B_iᵀ, A the k adapters' A
    matrices stacked (`a_stack`), `b_scaled` their s·B in the matmuls' dtype; gradients for x and every
    adapter. `tensors`: the k base weights and biases, then the k adapters' A and B parameters."""

    @staticmethod
    def forward(ctx, x, a_stack, b_scaled, scalings, *tensors):
        k, dtype = len(b_scaled), a_stack.dtype
        ranks = [b.shape[1] for b in b_scaled]  # each adapter's share of the stacked low-rank columns
        with torch.autocast(x.device.type, enabled=False):
            x2d = x.reshape(-1, x.shape[-1]).to(dtype)
            weights = [w.to(dtype) for w in tensors[0:2 * k:2]]
            biases = [None if b is None else b.to(dtype) for b in tensors[1:2 * k:2]]
            low_rank = x2d @ a_stack.t()
            outs = []
            for weight, bias, b, own in zip(weights, biases, b_scaled, low_rank.split(ranks, dim=1)):
                out = F.linear(x2d, weight, bias)
                out.addmm_(own, b.t())
                outs.append(out.view(*x.shape[:-1], out.shape[-1]))
        ctx.save_for_backward(x2d, a_stack, low_rank, *weights, *b_scaled)
        ctx.k, ctx.ranks, ctx.scalings, ctx.x_shape, ctx.x_dtype = k, ranks, scalings, x.shape, x.dtype
        ctx.lora_params = tensors[2 * k:]
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads_out):
        x2d, a_stack, low_rank, *rest = ctx.saved_tensors
        k, params = ctx.k, ctx.lora_params
        weights, b_scaled = rest[:k], rest[k:]
        with torch.autocast(x2d.device.type, enabled=False):
            gs = [None if g is None else g.reshape(-1, g.shape[-1]).to(x2d.dtype) for g in grads_out]
            grad_bs, parts = [], []
            for g, b, own, lora_b, scaling in zip(gs, b_scaled, low_rank.split(ctx.ranks, dim=1),
                                                  params[1::2], ctx.scalings):
                if g is None:  # an output nothing used
                    grad_bs.append(None)
                    parts.append(x2d.new_zeros(own.shape))
                else:
                    grad_bs.append(weight_grad(g.t(), own, lora_b, scaling))
                    parts.append(g @ b)
            grad_low_rank = torch.cat(parts, dim=1)
            grad_as = stacked_weight_grads(grad_low_rank, x2d, params[0::2], ctx.ranks)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = grad_low_rank @ a_stack
                for g, weight in zip(gs, weights):  # summed in the GEMMs, not by autograd's adds
                    if g is not None:
                        grad_x.addmm_(g, weight)
                grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        adapters = [grad for pair in zip(grad_as, grad_bs) for grad in pair]
        return (grad_x, None, None, None, *[None] * (2 * k), *adapters)


def stacked_weight_grads(grad_low_rank: torch.Tensor, x2d: torch.Tensor, params, ranks: list[int]) -> list:
    """The A matrices' gradients of a group: where none holds one yet, one GEMM for all of them (the
    input read once; `weight_grad` as for the first, whose dtype they share), split by rows; else each
    as `weight_grad` takes it (added where one is held)."""
    if all(p.grad is None for p in params):
        return list(weight_grad(grad_low_rank.t(), x2d, params[0]).split(ranks, dim=0))
    return [weight_grad(own.t(), x2d, param) for own, param in zip(grad_low_rank.split(ranks, dim=1), params)]


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
        if layer.lora_group is not None:
            layer.lora_group.forget()


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


# Sibling layers a module calls one after another on the same input (transformers' Qwen2 attention
# and MLP, Liger's SwiGLU MLP)
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class LoraGroup:
    """Fused sibling layers: the first of them called on an input computes all their outputs in one
    `GroupLoraFunction` node and keeps the others' until each sibling asks for its own with that same
    input (a sibling called on another input computes its own output alone)."""

    def __init__(self, layers: list):
        self.layers, self.x, self.pending, self.casts = layers, None, {}, {}

    def output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.x is x and index in self.pending:
            out = self.pending.pop(index)
            if not self.pending:
                self.x = None
            return out
        if any(layer.merged or layer.disable_adapters for layer in self.layers):
            return single_output(self.layers[index], x)
        outs = self.apply(x)
        self.x, self.pending = x, {i: out for i, out in enumerate(outs) if i != index}
        return outs[index]

    def apply(self, x: torch.Tensor) -> tuple:
        dtype = compute_dtype(x)
        a_stack, b_scaled = self.adapter_weights(dtype)
        tensors, params, scalings = [], [], []
        for layer in self.layers:
            name = layer.fused_adapter
            tensors += [layer.base_layer.weight, layer.base_layer.bias]
            params += [layer.lora_A[name].weight, layer.lora_B[name].weight]
            scalings.append(layer.scaling[name])
        return GroupLoraFunction.apply(x, a_stack, b_scaled, tuple(scalings), *tensors, *params)

    def adapter_weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, tuple]:
        """The stacked A and each s·B in `dtype`, kept until `forget_casts`, as each layer's are."""
        cached = self.casts.get(dtype)
        if cached is None:
            casts = [adapter_weights(layer, layer.fused_adapter, dtype) for layer in self.layers]
            cached = self.casts[dtype] = (torch.cat([a for a, _ in casts]), tuple(b for _, b in casts))
        return cached

    def forget(self) -> None:
        self.x, self.pending = None, {}
        self.casts.clear()


def lora_groups(model, layers: list) -> list[LoraGroup]:
    """The groups of `layers` (fused layers of `model`) that are siblings under one module."""
    fused = {id(layer) for layer in layers}
    groups = []
    for module in model.modules():
        for names in SIBLINGS:
            members = [getattr(module, name, None) for name in names]
            if all(id(member) in fused for member in members):
                groups.append(LoraGroup(members))
    return groups


def single_output(layer, x):
    name = layer.fused_adapter
    a, b_scaled = adapter_weights(layer, name, compute_dtype(x))
    return LoraLinearFunction.apply(x, layer.base_layer.weight, layer.base_layer.bias, layer.lora_A[name].weight,
                                    layer.lora_B[name].weight, layer.scaling[name], a, b_scaled)


def fused_forward(self, x, *args, **kwargs):
    # fuse() checked the layer; a merge or disabled adapters since, or extra arguments: PEFT's forward
    if args or kwargs or self.merged or self.disable_adapters:
        return type(self).forward(self, x, *args, **kwargs)
    if self.lora_group is not None:
        return self.lora_group.output(self.group_index, x)
    return single_output(self, x)


def fuse(model) -> list:
    """Swap the forward of every fusable LoRA layer of `model`; returns the layers swapped. Their
    adapters' casts are kept from one forward to the next: `forget_casts` after every weight update."""
    layers = [m for m in model.modules() if fusable(m)]
    for layer in layers:
        layer.fused_adapter = next(name for name in layer.active_adapters if name in layer.lora_A)
        layer.adapter_casts = {}
        layer.lora_group, layer.group_index = None, None
        layer.forward = types.MethodType(fused_forward, layer)
    for group in lora_groups(model, layers):
        for index, layer in enumerate(group.layers):
            layer.lora_group, layer.group_index = group, index
    return layers


def unfuse(layers: list) -> None:
    for layer in layers:
        # the instance attributes: the class's (PEFT's) forward again
        del layer.forward, layer.fused_adapter, layer.adapter_casts, layer.lora_group, layer.group_index


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
