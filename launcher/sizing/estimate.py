"""Per-GPU memory of a fine-tuning run, from the model's ``config.json`` alone, for every ZeRO stage
and offload; and the choice ``--zero auto`` makes from it. Pure: no file, no hardware, no heavy
import (the dry run decides ``--zero auto`` with this arithmetic, so it must stay light).

Parameter counts are exact for the decoder-only layouts in ``LAYOUTS`` (held against transformers'
own models in the tests). The model states follow DeepSpeed's estimators
(``estimate_zero2_model_states_mem_needs``, ``estimate_zero3_model_states_mem_needs``) for
bf16/fp16, per trainable parameter: 2 bytes of 16-bit weights, 2 of 16-bit gradients and 16 of
optimizer state (fp32 master weights 4, fp32 gradient partition 4, Adam's two moments 8); ZeRO-1
partitions the optimizer, ZeRO-2 the gradients too, ZeRO-3 everything (its 16-bit gradient
partition is transient and left out, as DeepSpeed's estimator does, plus a gather buffer of 4
bytes per parameter of the largest layer). DeepSpeed keeps the fp32 copy in fp32 runs too, so
fp32 only doubles the 16-bit parts. ZeRO-0 is plain DDP under torch autocast: weights, gradients
and Adam's moments in the dtype the recipe loads the model in (TRL's default: float32), and DDP's
gradient buckets hold a second copy of the gradients when there is more than one process.

Activations are approximate: Korthikanti et al. 2022 (eq. 1) give 34·s·b·h bytes per layer in
16-bit without recomputation; the 5·a·s²·b attention-score term is left out because transformers
uses SDPA/flash attention by default, which keeps no s×s scores. With gradient checkpointing
each layer keeps its 16-bit input (2·s·b·h) plus one layer recomputed at a time. The logits add
s·b·vocab·(2 + 8) bytes (16-bit logits, the loss's fp32 copy and its gradient). A fixed 2 GiB per
GPU covers the CUDA context, NCCL and DeepSpeed's communication buckets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Method = Literal["full", "lora", "qlora"]


METHODS: tuple[Method, ...] = ("full", "lora", "qlora")


GIB = 2**30


GPU_OVERHEAD = 2 * GIB  # CUDA context, NCCL buffers, DeepSpeed's communication buckets


CPU_OVERHEAD = 1 * GIB  # per CPU process: torch and the libraries, resident


HEADROOM = 0.10  # --zero auto keeps 10% of the memory free: allocator fragmentation, spikes


CPU_BUFFER_FACTOR = 1.5  # DeepSpeed's additional_buffer_factor for offloaded (CPU) memory


QLORA_BYTES = 0.5 + 4 / 64  # nf4: 4 bits per weight + one fp32 absmax per block of 64 (no nested quant)


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


# ---------------------------------------------------------------- parameter counts


@dataclass(frozen=True)
class Layout:
    """How one decoder-only family lays out its parameters beyond the common config fields."""

    tied: bool  # the config class's default for tie_word_embeddings
    qkv_bias: bool | None = False  # None: the config's attention_bias says
    o_bias: bool | None = False
    mlp_bias: bool | None = False  # None: the config's mlp_bias says
    norms: int = 2  # hidden-sized norm weights per layer
    qk_norm: Literal["none", "head", "full"] = "none"  # per-head (head_dim) or full-width q/k norms
    fused: bool = False  # one qkv_proj and one gate_up_proj (LoRA sees fewer, wider linears)
    head_dim: int | None = None  # the config class's default head_dim, where it has one


LAYOUTS: dict[str, Layout] = {
    "llama": Layout(tied=False, qkv_bias=None, o_bias=None, mlp_bias=None),
    "mistral": Layout(tied=False),
    "qwen2": Layout(tied=False, qkv_bias=True),
    "qwen3": Layout(tied=False, qkv_bias=None, o_bias=None, qk_norm="head", head_dim=128),
    "gemma": Layout(tied=True, qkv_bias=None, o_bias=None, head_dim=256),
    "gemma2": Layout(tied=True, qkv_bias=None, o_bias=None, norms=4, head_dim=256),
    "gemma3_text": Layout(tied=True, qkv_bias=None, o_bias=None, norms=4, qk_norm="head", head_dim=256),
    "phi3": Layout(tied=False, fused=True),
    "olmo2": Layout(tied=False, qkv_bias=None, o_bias=None, qk_norm="full"),
    "granite": Layout(tied=True, qkv_bias=None, o_bias=None, mlp_bias=None),
}


REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


@dataclass(frozen=True)
class Linear:
    """``count`` linear layers of this shape in the decoder (what LoRA adapts and QLoRA quantizes)."""

    fan_in: int
    fan_out: int
    bias: bool
    count: int


@dataclass(frozen=True)
class Model:
    """A model's parameter counts and the shapes the memory estimate needs."""

    model_type: str
    total: int
    largest_layer: int  # the most parameters one module holds directly (ZeRO-3 gathers it whole)
    hidden: int
    layers: int
    heads: int
    vocab: int
    linears: tuple[Linear, ...] = ()  # decoder linears; empty when counted some other way
    lora_linears: int | None = None  # set when the counts came from the model itself (transformers)
    quantizable: int | None = None

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of the decoder (peft's ``all-linear``: not the output head)."""
        if self.lora_linears is not None:
            return rank * self.lora_linears
        return sum(rank * (lin.fan_in + lin.fan_out) * lin.count for lin in self.linears)

    @property
    def quantized(self) -> int:
        """Weights bitsandbytes stores in 4 bits: every decoder linear (biases, norms, embeddings and
        the output head stay in 16 bits)."""
        if self.quantizable is not None:
            return self.quantizable
        return sum(lin.fan_in * lin.fan_out * lin.count for lin in self.linears)


def model_from_config(config: Mapping[str, Any]) -> tuple[Model | None, str]:
    """The exact counts of a known decoder-only layout, or why the config cannot be counted."""
    model_type = str(config.get("model_type", ""))
    layout = LAYOUTS.get(model_type)
    if layout is None:
        known = ", ".join(sorted(LAYOUTS))
        return None, f"model_type {model_type or '(none)'!r} is not a layout ftlaunch counts (known: {known})"
    ints: dict[str, int] = {}
    for key in REQUIRED:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return None, f"config.json: {key} is {value!r}, expected a positive integer"
        ints[key] = value
    h, inter, layers = ints["hidden_size"], ints["intermediate_size"], ints["num_hidden_layers"]
    heads, vocab = ints["num_attention_heads"], ints["vocab_size"]
    kv = _positive(config.get("num_key_value_heads")) or heads
    head_dim = _positive(config.get("head_dim")) or layout.head_dim or h // heads
    tied = config.get("tie_word_embeddings", layout.tied) is not False

    def flag(fixed: bool | None, key: str) -> bool:
        return bool(config.get(key, False)) if fixed is None else fixed

    qkv_b, o_b = flag(layout.qkv_bias, "attention_bias"), flag(layout.o_bias, "attention_bias")
    mlp_b = flag(layout.mlp_bias, "mlp_bias")
    q, k = heads * head_dim, kv * head_dim
    if layout.fused:
        linears = [Linear(h, q + 2 * k, qkv_b, layers), Linear(h, 2 * inter, mlp_b, layers)]
    else:
        linears = [Linear(h, q, qkv_b, layers), Linear(h, k, qkv_b, 2 * layers)]
        linears += [Linear(h, inter, mlp_b, 2 * layers)]
    linears += [Linear(q, h, o_b, layers), Linear(inter, h, mlp_b, layers)]
    qk_norm = {"none": 0, "head": 2 * head_dim, "full": q + k}[layout.qk_norm]
    per_layer_other = layout.norms * h + qk_norm
    linear_params = sum(
        (lin.fan_in * lin.fan_out + (lin.fan_out if lin.bias else 0)) * lin.count for lin in linears
    )
    embed = vocab * h
    total = embed + (0 if tied else embed) + linear_params + layers * per_layer_other + h
    largest = max([embed, *(lin.fan_in * lin.fan_out + (lin.fan_out if lin.bias else 0) for lin in linears)])
    return Model(model_type, total, largest, h, layers, heads, vocab, tuple(linears)), ""


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def load_dtype(name: str | None, config: Mapping[str, Any]) -> str:
    """The dtype the recipe loads the model in: TRL's ``--dtype`` (default float32), ``auto`` meaning
    the config's own ``dtype``/``torch_dtype``."""
    if name in (None, ""):
        return "float32"
    if name == "auto":
        stored = config.get("dtype") or config.get("torch_dtype")
        return str(stored) if stored in DTYPE_BYTES else "float32"
    return name if name in DTYPE_BYTES else "float32"


# ---------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Workload:
    """Everything the estimate depends on besides the ZeRO option."""

    model: Model
    method: Method = "full"
    lora_r: int = 16
    precision: str = "bf16"  # bf16, fp16 or fp32 (the DeepSpeed run's)
    dtype: str = "float32"  # what the recipe loads the model in (plain DDP keeps it)
    seq_len: int = 2048
    micro: int = 1
    checkpointing: bool = False
    nodes: int = 1
    per_node: int = 1
    on_cpu: bool = False

    @property
    def world(self) -> int:
        return self.nodes * self.per_node

    @property
    def trainable(self) -> int:
        return self.model.total if self.method == "full" else self.model.lora_params(self.lora_r)

    def frozen_bytes(self, weight_bytes: float) -> float:
        """The frozen base model (LoRA/QLoRA), its quantized linears at 4 bits for QLoRA."""
        if self.method == "full":
            return 0.0
        if self.method == "lora":
            return self.model.total * weight_bytes
        rest = self.model.total - self.model.quantized
        return self.model.quantized * QLORA_BYTES + rest * weight_bytes


@dataclass(frozen=True)
class Option:
    """One way to run: a ZeRO stage and what it offloads."""

    stage: int
    offload_optimizer: bool = False
    offload_params: bool = False

    def label(self) -> str:
        parts = [
            n for n, on in (("optimizer", self.offload_optimizer), ("params", self.offload_params)) if on
        ]
        offload = f" + offload {'+'.join(parts)}" if parts else ""
        return f"ZeRO-{self.stage}{offload}" if self.stage else "ZeRO-0 (DDP)"


# In --zero auto's order of preference: the lowest stage (least communication), then the least offload.
OPTIONS = (
    Option(0),
    Option(1),
    Option(2),
    Option(2, offload_optimizer=True),
    Option(3),
    Option(3, offload_optimizer=True),
    Option(3, offload_optimizer=True, offload_params=True),
)


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU (per process on CPU), by component, and the CPU memory per node offload needs."""

    option: Option
    params: float
    grads: float
    optimizer: float
    gather: float
    activations: float
    overhead: float
    cpu_offload: float = 0.0

    @property
    def model_states(self) -> float:
        return self.params + self.grads + self.optimizer + self.gather

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.overhead


def estimate(work: Workload, option: Option) -> Estimate:
    model_states = _ddp_states(work) if option.stage == 0 else _zero_states(work, option)
    params, grads, optimizer, gather, offloaded = model_states
    cpu = offloaded * work.per_node * CPU_BUFFER_FACTOR
    overhead = CPU_OVERHEAD if work.on_cpu else GPU_OVERHEAD
    return Estimate(option, params, grads, optimizer, gather, activations(work), overhead, cpu)


def _ddp_states(work: Workload) -> tuple[float, float, float, float, float]:
    """Plain DDP: everything replicated, in the load dtype (autocast computes in 16 bits but keeps
    the weights as loaded); peft keeps LoRA adapters in fp32 whatever the base."""
    weight = DTYPE_BYTES[work.dtype]
    each = 4 if work.method != "full" else weight
    trainable = work.trainable
    buckets = 2 if work.world > 1 else 1  # DDP's reducer buckets: a second copy of the gradients
    params = trainable * each + work.frozen_bytes(weight)
    return params, trainable * each * buckets, trainable * each * 2, 0.0, 0.0


def _zero_states(work: Workload, option: Option) -> tuple[float, float, float, float, float]:
    """DeepSpeed's accounting (see the module docstring); frozen weights are 16-bit (DeepSpeed casts
    the module) and ZeRO-3 partitions them like the rest."""
    w = 4 if work.precision == "fp32" else 2  # the model's weights and gradients as DeepSpeed holds them
    opt = 16
    t, n = work.trainable, work.world
    frozen = work.frozen_bytes(w)
    if option.stage == 1:
        return t * w + frozen, t * w, t * opt / n, 0.0, 0.0
    if option.stage == 2:
        if option.offload_optimizer:
            return t * w + frozen, 0.0, 0.0, 0.0, t * opt / n
        return t * w + frozen, t * w / n, t * opt / n, 0.0, 0.0
    gather = 2 * w * work.model.largest_layer  # the largest layer's weights and gradients, gathered whole
    weights, states = (t * w + frozen) / n, t * opt / n
    offloaded = (weights if option.offload_params else 0.0) + (states if option.offload_optimizer else 0.0)
    on_gpu_weights = 0.0 if option.offload_params else weights
    on_gpu_states = 0.0 if option.offload_optimizer else states
    return on_gpu_weights, 0.0, on_gpu_states, gather, offloaded


def activations(work: Workload) -> float:
    """Approximate (see the module docstring): per layer 34·s·b·h in 16 bits, or with gradient
    checkpointing each layer's input plus one layer at a time; plus the logits."""
    m = work.model
    sbh = work.seq_len * work.micro * m.hidden
    scale = 2 if work.precision == "fp32" else 1
    layers = (2 * sbh * m.layers + 34 * sbh) if work.checkpointing else 34 * sbh * m.layers
    logits = work.seq_len * work.micro * m.vocab * (2 * scale + 8)
    return float(layers * scale + logits)


def estimates(work: Workload, options: tuple[Option, ...] = OPTIONS) -> list[Estimate]:
    return [estimate(work, o) for o in options]


# ---------------------------------------------------------------- the choice


@dataclass(frozen=True)
class Budget:
    """The memory an option must fit: each GPU's (on CPU processes: the node's RAM, shared), and
    the node's RAM for what offload puts there (None: not known, not checked)."""

    memory: int
    source: str
    ram: int | None = None
    ram_source: str = ""

    def usable(self, work: Workload) -> float:
        """What one process may use, less the headroom."""
        return self.memory * (1 - HEADROOM) / (work.per_node if work.on_cpu else 1)

    def usable_ram(self) -> float | None:
        return None if self.ram is None else self.ram * (1 - HEADROOM)

    def verdict(self, est: Estimate, work: Workload) -> str:
        if est.total > self.usable(work):
            return "no"
        ram = self.usable_ram()
        return "no (RAM)" if ram is not None and est.cpu_offload > ram else "yes"


@dataclass(frozen=True)
class Choice:
    """What ``--zero auto`` chose (``chosen`` None: nothing fits) among ``considered``."""

    chosen: Estimate | None
    considered: tuple[Estimate, ...]
    passed_over: tuple[Estimate, ...]  # the preferred options that did not fit


def allowed_options(
    on_cpu: bool, offload_optimizer: str = "none", offload_params: str = "none"
) -> tuple[Option, ...]:
    """The options ``--zero auto`` may pick. An offload the user set is kept, so only the stages
    that allow it remain (optimizer offload: ZeRO-2 and 3; parameter offload: ZeRO-3). Otherwise,
    on CPU, only the stages: offloading from RAM to RAM gains nothing."""
    opt, par = offload_optimizer != "none", offload_params != "none"
    if opt or par:
        return tuple(Option(stage, opt, par) for stage in (2, 3) if stage == 3 or not par)
    if on_cpu:
        return tuple(o for o in OPTIONS if not (o.offload_optimizer or o.offload_params))
    return OPTIONS


def choose(work: Workload, budget: Budget, options: tuple[Option, ...] = OPTIONS) -> Choice:
    """The first option, in ``options``' order, that fits ``budget``."""
    considered = tuple(estimates(work, options))
    for i, est in enumerate(considered):
        if budget.verdict(est, work) == "yes":
            return Choice(est, considered, considered[:i])
    return Choice(None, considered, considered)
