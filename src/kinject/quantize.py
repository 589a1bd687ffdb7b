"""INT8 for the serving generator (``models.quantize``): torch's dynamic INT8 on the CPU here;
``ct2-int8`` (the generator on CTranslate2 INT8) lives in kinject/generator_ct2.py.

Every ``nn.Linear`` of the loaded model (attention, MLP and the output head) becomes an
:class:`Int8Linear`: its weight is stored as int8 with one scale per output channel, and
each call quantises the activations on the fly (``torch.ao``'s dynamic quantisation,
fbgemm/onednn kernels). Embeddings and norms stay fp32.

``Int8Linear`` is still an ``nn.Linear`` (with no fp32 weight), so PEFT wraps it in a LoRA
layer like any other linear layer: adapters are loaded, hot-swapped and disabled on the
quantised model exactly as on the fp32 one, the LoRA weights themselves staying fp32 and
unmerged. Training never sees this model: the trainer loads its own fp32 base.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

from kinject.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("auto", "none", "int8", "ct2-int8")


def resolve_quantize(setting: str, device: str) -> str:
    """``models.quantize`` for ``device``: ``auto`` -> ``ct2-int8`` on the CPU (the measured
    winner, bench/int8.py), ``none`` elsewhere (a GPU runs bf16 instead); ``int8`` off the CPU
    is refused (the dynamic INT8 kernels are CPU kernels), ``ct2-int8`` off the CPU and CUDA
    too (CTranslate2 has no other backend)."""
    if setting not in QUANTIZE_CHOICES:
        raise ConfigError(f"models.quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got "
                          f"{setting!r}")
    if setting == "auto":
        return "ct2-int8" if device == "cpu" else "none"
    if setting == "int8" and device != "cpu":
        raise ConfigError(f"models.quantize='int8' runs on the CPU only, but the generator is on "
                          f"{device!r}; set KINJECT_MODELS__QUANTIZE=none (or auto) there")
    if setting == "ct2-int8" and device not in ("cpu", "cuda"):
        raise ConfigError(f"models.quantize='ct2-int8' runs on the CPU or CUDA, but the "
                          f"generator is on {device!r}; set KINJECT_MODELS__QUANTIZE=none there")
    return setting


def _int8_linear_class() -> type[Any]:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    class Int8Linear(torch.nn.Linear):
        """An ``nn.Linear`` computed by a dynamic-quantised INT8 linear (per-channel int8
        weights, activations quantised per call); the fp32 weight is dropped."""

        _int8: Any

        def __init__(self, linear: torch.nn.Linear) -> None:
            torch.nn.Module.__init__(self)
            self.in_features = linear.in_features
            self.out_features = linear.out_features
            source = torch.nn.Linear(linear.in_features, linear.out_features,
                                     bias=linear.bias is not None, device="meta")
            source.weight = torch.nn.Parameter(linear.weight.detach().float(),
                                               requires_grad=False)
            if linear.bias is not None:
                source.bias = torch.nn.Parameter(linear.bias.detach().float(),
                                                 requires_grad=False)
            source.qconfig = per_channel_dynamic_qconfig  # type: ignore[assignment]
            with warnings.catch_warnings():
                # torch 2.14 announces that quantised tensor types will go (pytorch#184982);
                # they work in the pinned torch, and torchao, their successor, is not pinned.
                warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
                int8 = DynamicLinear.from_float(source)
            # Held outside the module tree: its packed weights are not state_dict entries, so
            # PEFT's loading of adapter weights (load_state_dict, not strict) passes them by.
            self.__dict__["_int8"] = int8
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

        @property
        def qweight(self) -> torch.Tensor:
            """The int8 weight (a quantised tensor). PEFT reads ``qweight`` of a quantised
            base layer to place the LoRA weights on its device."""
            weight: torch.Tensor = self._int8.weight()
            return weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            dtype = x.dtype
            out: torch.Tensor = self._int8(x if dtype == torch.float32 else x.float())
            return out if dtype == torch.float32 else out.to(dtype)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int8Linear


_INT8_LINEAR: type[Any] | None = None


def int8_linear_class() -> type[Any]:
    """The ``Int8Linear`` class (built on first use, so importing kinject never imports
    torch)."""
    global _INT8_LINEAR
    if _INT8_LINEAR is None:
        _INT8_LINEAR = _int8_linear_class()
    return _INT8_LINEAR


def quantize_int8(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` (on the CPU) by an :class:`Int8Linear`, in
    place; returns how many were replaced."""
    import torch

    cls = int8_linear_class()
    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, torch.nn.Linear) and not isinstance(mod, cls)]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, cls(mod))
    # What stays fp32 (embeddings, norms) is copied off the memory map of the loaded weights
    # file: while one tensor of it lives, the whole file stays mapped and, once read by the
    # quantisation, resident (the INT8 model would take more memory than the fp32 one).
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    log.info("generator: %d linear layers quantised to dynamic INT8", len(targets))
    return len(targets)


def is_int8(model: Any) -> bool:
    """Whether ``model`` holds INT8 linear layers (from :func:`quantize_int8`)."""
    cls = _INT8_LINEAR
    return cls is not None and any(isinstance(m, cls) for m in model.modules())
