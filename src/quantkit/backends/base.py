"""The backend contract and its registry.

A backend declares what it can produce and the packages it needs, and does one job: turn a loaded model
and a plan into a checkpoint directory. Everything about a producer lives in its module; the rest of
quantkit talks to it through :class:`Backend` only.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from quantkit.errors import (
    MissingDependencyError,
    QuantkitError,
    UnknownNameError,
    UnsupportedSchemeError,
)
from quantkit.hardware import Hardware
from quantkit.schemes import Scheme


@dataclass(frozen=True)
class SupportQuery:
    """What the planner asks every backend: can you produce ``scheme`` for ``hardware`` here, and how much
    would you like to?

    ``device`` is where the producer runs (``"cuda"`` or ``"cpu"``); ``for_vllm``: the checkpoint must load in
    vLLM; ``tied_embeddings``: the model ties ``lm_head`` to the input embeddings.
    """

    scheme: Scheme
    hardware: Hardware
    device: str = "cpu"
    for_vllm: bool = True
    tied_embeddings: bool = False


@dataclass(frozen=True)
class BackendSupport:
    """A backend's answer: ``ok`` (it can), ``reason`` (shown in the plan either way) and ``preference``
    (among backends that can, the highest wins; ties go to the first registered)."""

    ok: bool
    reason: str
    preference: int = 0


@dataclass(frozen=True)
class ProduceJob:
    """Everything a backend needs to write one checkpoint.

    ``model`` and ``tokenizer`` are loaded transformers objects; ``calibration`` holds tokenized samples
    (lists of token ids), empty for data-free schemes; ``ignore`` uses the model's module names. Every field
    but the loaded objects comes from the :class:`~quantkit.planning.planner.Plan`: a backend executes
    decisions, it does not make them.
    """

    model: Any
    tokenizer: Any
    scheme: Scheme
    ignore: tuple[str, ...]
    kv_cache: str
    calibration: tuple[tuple[int, ...], ...]
    max_seq_length: int
    group_size: int | None
    options: dict[str, Any] = field(default_factory=dict)
    #: mixed precision: (scheme name, ``re:`` targets) for layers that take another scheme than ``scheme``
    #: (which then covers every other ``Linear``); the plan's ``mixed`` decision, empty for a uniform plan
    layer_schemes: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class ModelFreeJob:
    """Everything a backend needs to quantize a checkpoint directory shard by shard, without loading the model.

    ``source`` is the checkpoint directory (``config.json``, tokenizer files, ``*.safetensors``); ``ignore``
    uses its module names; ``workers`` shard jobs run at once on ``device`` (``"cuda"`` or ``"cpu"``). Every
    field comes from the :class:`~quantkit.planning.planner.Plan` (``production="model-free"``).
    """

    source: Path
    scheme: Scheme
    ignore: tuple[str, ...]
    group_size: int | None
    workers: int
    device: str
    options: dict[str, Any] = field(default_factory=dict)
    #: the final output directory: a backend that can resume keeps its finished shards beside it
    #: (``checkpoint.atomic.partial_dir``); None runs without resume
    output_dir: Path | None = None


@dataclass
class ProduceResult:
    """What a backend reports back: timings (seconds) and notes worth showing the user."""

    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Backend(ABC):
    """A producer of quantized checkpoints."""

    name: ClassVar[str]
    #: import name -> the pip requirement that provides it
    requires: ClassVar[dict[str, str]] = {}
    #: (samples, tokens per sample, where the figure comes from): the producer's own calibration recommendation,
    #: the default for real models (the plan states it; ``num_calibration_samples``/``max_seq_length`` override)
    calibration_recommendation: ClassVar[tuple[int, int, str]] = (512, 2048, "the common PTQ default")
    #: how the in-memory path uses the GPUs of the machine it runs on, as (placement, why): ``"host"`` loads the
    #: model into host RAM and leaves the accelerator to the producer; ``"gpus"`` loads it spread over the GPUs
    #: present (accelerate's ``device_map="auto"``)
    gpu_placement: ClassVar[tuple[str, str]] = ("host", "the model is loaded into host RAM")

    @abstractmethod
    def can_produce(self, scheme: Scheme) -> bool:
        """Whether this backend has a recipe for ``scheme`` at all (``quantkit schemes`` lists it)."""

    @abstractmethod
    def supports(self, query: SupportQuery) -> BackendSupport:
        """Whether, and how gladly, this backend produces ``query.scheme`` for ``query.hardware`` here. The
        planner asks every registered backend and picks; nothing outside ``backends/`` names a backend."""

    def vllm_method(self, scheme: Scheme) -> str | None:  # noqa: B027 - optional hook
        """The quantization method vLLM will detect on this backend's checkpoint of ``scheme`` (the pipeline
        checks the written checkpoint against it); None when the backend cannot say."""
        return None

    def check_environment(self) -> None:
        """Fail early, with the exact install line, when a required package is missing."""
        missing = [pkg for mod, pkg in self.requires.items() if importlib.util.find_spec(mod) is None]
        if missing:
            raise MissingDependencyError(
                f"The {self.name} backend needs {', '.join(missing)}, which this Python environment lacks.",
                fix=("Run `scripts/setup_envs.sh produce` and use .venvs/produce/bin/python, "
                     f"or `pip install {' '.join(missing)} -c envs/constraints-cpu.txt`."),
            )

    def check_job(self, job: ProduceJob, *, device: str) -> None:  # noqa: B027 - optional hook
        """Refuse, before any work, a job this backend cannot do on ``device`` ("cpu" or "cuda") that
        :meth:`supports` cannot see (e.g. a KV-cache dtype without a config)."""

    @abstractmethod
    def produce(self, job: ProduceJob, out_dir: Path) -> ProduceResult:
        """Quantize ``job.model`` and save a checkpoint (weights, config, tokenizer) into ``out_dir``."""

    def model_free_support(self, scheme: Scheme) -> BackendSupport:
        """Whether this backend can produce ``scheme`` from the checkpoint files, shard by shard, without
        instantiating the model (the planner's ``production="model-free"``); no by default."""
        return BackendSupport(False, f"the {self.name} backend has no model-free path")

    def offloaded_support(self, scheme: Scheme) -> BackendSupport:
        """Whether :meth:`produce` works on a model loaded offloaded (weights on CPU/disk, one decoder layer at
        a time on the accelerator: the planner's ``production="offloaded"``); no by default."""
        return BackendSupport(False, f"the {self.name} backend has no offloaded path")

    def distributed_support(self, scheme: Scheme, device: str = "cuda") -> BackendSupport:
        """Whether :meth:`produce` runs as one of N ranks under torchrun (``quantize(nproc=N)``: each rank
        calibrates on its share of the samples, rank 0 writes) on ``device`` ("cuda": a GPU per rank, "cpu":
        gloo on this host); no by default."""
        return BackendSupport(False, f"the {self.name} backend has no distributed path")

    def produce_model_free(self, job: ModelFreeJob, out_dir: Path) -> ProduceResult:
        """Quantize the checkpoint at ``job.source`` shard by shard into ``out_dir`` (weights, index, config,
        tokenizer), for a backend whose :meth:`model_free_support` says yes."""
        raise UnsupportedSchemeError(f"The {self.name} backend has no model-free path.",
                                     fix="Use production='in-memory'.")


_REGISTRY: dict[str, type[Backend]] = {}
_MODULES: dict[str, str] = {
    "llmcompressor": "quantkit.backends.llmcompressor",
    "modelopt": "quantkit.backends.modelopt",
}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator that registers a backend under ``name``; a duplicate name is an error."""

    def deco(cls: type[Backend]) -> type[Backend]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise QuantkitError(f"Backend {name!r} is already registered by {_REGISTRY[name].__qualname__}.",
                                fix="Give the new backend another name.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def backend_names() -> tuple[str, ...]:
    """Names of every backend quantkit knows (registered or importable on demand)."""
    return tuple(sorted(set(_MODULES) | set(_REGISTRY)))


def all_backends() -> list[Backend]:
    """One instance of every known backend: the built-in ones in the order of ``_MODULES``, then those
    registered at run time (imports each module; none imports torch at module level). The order breaks ties
    between equally willing backends, so it must not depend on which module happened to be imported first."""
    for name in _MODULES:
        if name not in _REGISTRY:
            importlib.import_module(_MODULES[name])
    # the built-in backends in the order of _MODULES (not import order), then ones registered at run time
    names = [*_MODULES, *(n for n in _REGISTRY if n not in _MODULES)]
    return [_REGISTRY[n]() for n in names if n in _REGISTRY]


def backends_for(scheme: Scheme) -> tuple[str, ...]:
    """Names of the backends that have a recipe for ``scheme``."""
    return tuple(b.name for b in all_backends() if b.can_produce(scheme))


def unregister_backend(name: str) -> None:
    """Remove a backend registered at run time (tests clean up with it)."""
    _REGISTRY.pop(name, None)


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name, importing its module on first use."""
    if name not in _REGISTRY:
        if name not in _MODULES:
            raise UnknownNameError.for_name("backend", name, backend_names())
        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]()
