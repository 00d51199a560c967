"""Typed run configuration, loaded from YAML with `key.path=value` overrides.

Every section is a pydantic model with `extra="forbid"`, so a typo is an error, not a silent default.
`load_config` turns any validation failure into a one-line `ConfigError` naming the field.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import typing
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from fedhello.components import AGGREGATORS, ALLOCATORS
from fedhello.errors import ConfigError
from fedhello.plan import Upload

EMBEDDED_MODEL = "embedded:all-MiniLM-L6-v2"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """The base model and how much text it reads and writes."""

    name_or_path: str = Field(
        EMBEDDED_MODEL,
        description="a local model folder (config.json, weights, tokenizer), a hub id (owner/name or a bare name "
        "such as bert-base-uncased), or the embedded MiniLM; a path that looks local (./, /, ~, an existing parent "
        "folder) must exist",
    )
    max_length: int = Field(128, gt=0, description="token budget per text sample")
    max_new_tokens: int = Field(64, gt=0, description="causal_lm: tokens generated per held-out prompt when scoring")
    quantization: Literal["none", "int8", "nf4"] = Field(
        "none",
        description="base weights loaded in 8 bits (LLM.int8) or 4-bit NF4 (QLoRA) through bitsandbytes, prepared "
        "with peft's k-bit preparation; LoRA factors, the head and the aggregation stay in full precision. A tier "
        "may load its own (tiers[].quantization), a deployment node too (--node-config quantization=nf4)",
    )


class LoraSettings(Section):
    """The LoRA adapter every client trains (peft's LoraConfig); a method's own rank options are in `strategy:`."""

    r: int = Field(8, gt=0, description="LoRA rank")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the LoRA input (peft's lora_dropout)")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"],
        description="names of the modules of every block that get LoRA factors, e.g. [query, value] (BERT), "
        "[q_proj, v_proj] (LLaMA, ViT), [c_attn] (GPT-2)",
    )
    head_modules: list[str] = Field(
        default_factory=lambda: ["classifier"],
        description="modules trained in full and federated on every client (the task head)",
    )


class DataConfig(Section):
    """Where the data come from and which columns hold what. Your own data: `source: hf` (text and label
    columns) or `source: instructions` (task causal_lm), with `path` a csv/json(l)/parquet file."""

    source: str = Field(
        "bbc_news",
        description="registered data source: bbc_news (shipped), hf (a csv/json(l)/parquet file, save_to_disk "
        "folder or hub name with text and label columns), folders (class folders of .txt files), instructions "
        "(your own instruction data, task causal_lm), cifar100, domainnet, ledgar, dolly, natural_instructions "
        "(fedhello strategies lists them)",
    )
    path: str | None = Field(
        None,
        description="the data: a csv/json(l)/parquet file, a save_to_disk folder, a folder of class folders "
        "(source folders) or a hub name (owner/name); a path that looks local (./, /, ~, a file extension, an "
        "existing parent folder) must exist. Relative paths are read from the current folder. Refused with "
        "bbc_news, whose corpus ships with fedhello",
    )
    subset: str | None = Field(None, description="hub configuration name, e.g. 'ledgar'")
    text_column: str = Field("text", description="text_classification: column of the texts")
    label_column: str = Field(
        "label",
        description="column of the class (classification) or of the group of a row (instructions: optional, "
        "what label-skew partitions split by); values may be names or integer ids",
    )
    label_names: list[str] | None = Field(
        None,
        description="the run's classes in label-id order (None: the source's own). Fixes how every node of a "
        "deployment whose SuperNodes hold their own data maps its labels (flower.node_data)",
    )
    bad_labels: Literal["refuse", "drop"] = Field(
        "refuse",
        description="rows whose label is missing (empty, or the 'no label' id -1) or, where the run fixes its "
        "classes (data.label_names, a SuperNode's own data), not one of them: refuse the file in one line naming "
        "it, or drop those rows and say how many",
    )
    test_size: float = Field(0.2, gt=0.0, lt=1.0, description="held-out test share when no test split exists")
    proxy_size: int = Field(50, ge=0, description="training samples held out as the server's FIM proxy set")
    max_train_samples: int | None = Field(None, gt=0, description="cap on training samples (quick runs)")
    max_test_samples: int | None = Field(None, gt=0, description="cap on test samples (quick runs)")
    image_column: str = Field("image", description="image_classification: column of PIL images or image files")
    instruction_column: str = Field("instruction", description="causal_lm: column of the instruction")
    context_column: str | None = Field(
        "context", description="causal_lm: column of an instruction's input/context (null: the data have none)"
    )
    response_column: str = Field("response", description="causal_lm: column of the reference response")
    max_generate_samples: int = Field(
        64, ge=0, description="causal_lm: held-out prompts answered by generation and scored with ROUGE-L"
    )
    encoding: str = Field(
        "utf-8",
        description="text encoding of csv/json files and of the .txt files of source=folders, e.g. latin-1, cp1252",
    )
    csv_delimiter: str = Field(",", min_length=1, description="csv files: field separator, e.g. ';' or '\\t'")
    csv_quotechar: str = Field('"', min_length=1, max_length=1, description="csv files: quote character")
    csv_quoting: Literal["minimal", "all", "nonnumeric", "none"] = Field(
        "minimal", description="csv files: quoting convention (none = quote characters are ordinary text)"
    )

    @field_validator("label_names")
    @classmethod
    def _distinct_labels(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value)):
            raise ValueError("give at least two distinct class names, in label-id order")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("not an encoding Python knows; use e.g. utf-8, latin-1 or cp1252") from None
        return value


class PartitionConfig(Section):
    """How the training split is divided among the clients (IID, label skew, domain skew)."""

    kind: str = Field(
        "pathological",
        description="registered partitioner: iid, dirichlet, pathological, pathological_dirichlet (these three "
        "split by data.label_column), domain, domain_pathological",
    )
    alpha: float = Field(0.5, gt=0.0, description="Dirichlet concentration (kind=dirichlet)")
    classes_per_client: int = Field(2, gt=0, description="classes held by each client (kind=pathological)")
    min_size: int = Field(0, ge=0, description="minimum samples per client (kind=dirichlet, pathological_dirichlet)")
    domain_column: str = Field(
        "domain", description="column naming each sample's domain or group (kind=domain, domain_pathological)"
    )


class FederationConfig(Section):
    """How many clients there are, how many train each round, and for how many rounds."""

    num_clients: int = Field(20, gt=0, description="clients the training split is divided among")
    clients_per_round: int = Field(5, gt=0, description="clients sampled (seeded) to train in each round")
    rounds: int = Field(20, gt=0, description="federated rounds")
    eval_every: int = Field(1, gt=0, description="evaluate the global model every N rounds (and the last)")
    local_test: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="personalised evaluation: this share of each client's own data (seeded per client) is its local "
        "test split, never trained on; on evaluation rounds every sampled client scores the global model and, for a "
        "method with a personal part, its personalised model on it (docs/compare.md, Personalised evaluation); "
        "0 = off",
    )
    eval_subset: int | None = Field(
        None,
        gt=0,
        description="evaluate intermediate rounds on this many test samples (a fixed seeded subset); the last "
        "round always uses the whole test split (None = always the whole split)",
    )


class TierConfig(Section):
    """One resource tier of clients (an item of `tiers`): its share of the clients and what each of them can
    train (a layer count or a memory/time budget)."""

    share: float = Field(description="fraction of clients in this tier, e.g. 1/3")
    layers: int | None = Field(
        None,
        gt=0,
        description="number of transformer layers a client of this tier can train; may be left out when the "
        "tier declares memory_mb or seconds_per_step (then the budget profile decides)",
    )
    memory_mb: float | None = Field(
        None, gt=0.0, description="training memory budget of a client: MiB above the loaded model (docs/benchmarks.md)"
    )
    memory_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="training memory budget as a fraction of what training every layer (activations kept) costs "
        "on the run's measured profile, e.g. 0.45; portable across devices. The run writes the MiB it stands for "
        "into memory_mb",
    )
    seconds_per_step: float | None = Field(None, gt=0.0, description="time budget of one local optimizer step")
    total_memory_mb: float | None = Field(
        None,
        gt=0.0,
        description="whole memory budget of a client: the base weights at the tier's quantization plus the "
        "training memory (what a device must hold); met by quantizing, by training fewer/higher layers, or both",
    )
    quantization: Literal["none", "int8", "nf4", "auto"] | None = Field(
        None,
        description="base-weight quantization of this tier's clients (None: model.quantization); auto: the one "
        "with which total_memory_mb trains the most depth (ties go to the more precise one)",
    )

    @model_validator(mode="after")
    def _capacity(self) -> TierConfig:
        if self.layers is None and not self.has_budget:
            raise ValueError("a tier needs layers, memory_mb, memory_fraction, total_memory_mb or seconds_per_step")
        if self.quantization == "auto" and self.total_memory_mb is None:
            raise ValueError(
                "quantization: auto needs total_memory_mb (the budget that counts the base weights); set it or "
                "name a quantization"
            )
        return self

    @property
    def has_budget(self) -> bool:
        return any(
            b is not None for b in (self.memory_mb, self.memory_fraction, self.total_memory_mb, self.seconds_per_step)
        )

    @field_validator("share", mode="before")
    @classmethod
    def _fraction(cls, value: Any) -> float:
        if isinstance(value, str):
            try:
                return float(Fraction(value.strip()))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"'{value}' is not a number or fraction like 1/3") from None
        return value

    @field_validator("share")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError("must be in (0, 1]")
        return value


class StrategyConfig(Section):
    """The method's strategy: which LoRA layers each sampled client trains in a round, and the strategy's own
    options. `name` picks a registered strategy (`fedhello strategies`); the other keys are that strategy's options
    model (a subclass of this one, declared by its allocator as `Options`), so a key another strategy has is an
    error, not silently ignored. The fields here are those of every strategy."""

    name: str = Field(
        "fim+gd", description="registered allocation strategy (fedhello strategies lists them; README, The method)"
    )
    depth_aware: bool = Field(
        False,
        description="budget-true plans for any strategy: a plan that does not fit its tier's memory/time budget is "
        "replaced by the fitting set that keeps most of the strategy's layers (needs budget tiers)",
    )
    recompute: bool = Field(
        False,
        description="budget-true plans (fill, fedpilot, depth_aware) may recompute activations of some blocks "
        "to fit a memory budget: deeper layer sets for more time per step; the cost model picks the fewest blocks",
    )

    @property
    def sends_lower_ranks(self) -> bool:
        """Whether a client may send a LoRA pair at a lower rank than its plan's (a self-pruning client): the
        server's update validation then accepts it, and the aggregator must merge rank-truncated uploads."""
        return False


DEFAULT_STRATEGY = StrategyConfig.model_fields["name"].default


def strategy_options(value: Any) -> StrategyConfig:  # noqa: ANN401 - a raw `strategy:` mapping or options
    """The `strategy:` section validated by its strategy's own options model (`Allocator.Options`), looked up by
    `name` in the strategy registry (an unknown name is a one-line error)."""
    if isinstance(value, StrategyConfig):
        return value
    if not isinstance(value, dict):
        return StrategyConfig.model_validate(value)  # pydantic's own error for a non-mapping
    name = value.get("name", DEFAULT_STRATEGY)
    if not isinstance(name, str):
        return StrategyConfig.model_validate(value)
    return ALLOCATORS.get(name).Options.model_validate(value)


class TrainConfig(Section):
    """Local training of every client (optimizer, batches, schedule, device, precision)."""

    local_epochs: int = Field(1, gt=0, description="passes over its data a client makes in a round")
    batch_size: int = Field(16, gt=0, description="samples per micro-batch (per forward/backward pass)")
    lr: float = Field(5e-4, gt=0.0, description="AdamW learning rate (peak of the schedule)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="learning rate across rounds: constant, or cosine decay from lr to min_lr_ratio*lr at the last "
        "round (after warmup_rounds of linear warm-up); every client of a round uses that round's rate",
    )
    warmup_rounds: int = Field(0, ge=0, description="rounds of linear learning-rate warm-up before the schedule")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine: final learning rate as a share of lr")
    max_grad_norm: float | None = Field(
        None, gt=0.0, description="clip the gradient norm of the trained tensors per optimizer step (None = off)"
    )
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay")
    proximal_mu: float = Field(
        0.0,
        ge=0.0,
        description="FedProx: adds (mu/2)*||w - w_start||^2 over the client's trained parameters to its loss, w_start "
        "the values it started the round from (the global adapter); keeps drifting clients near it (0 = off)",
    )
    max_steps: int | None = Field(None, gt=0, description="cap on local optimizer steps per round")
    device: str = Field("cpu", description="cpu, cuda, or auto")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision on CUDA (fp16 adds a gradient scaler); the weights stay fp32"
    )
    grad_accum: int = Field(1, gt=0, description="micro-batches accumulated per optimizer step")
    effective_batch_size: int | None = Field(
        None, gt=0, description="batch per optimizer step; sets grad_accum = effective_batch_size / batch_size"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (large models)")
    record_resources: bool = Field(
        False, description="record each client's peak training memory (peak_mem_mb) and median step_seconds"
    )

    @model_validator(mode="after")
    def _accumulation(self) -> TrainConfig:
        if self.effective_batch_size is not None:
            if self.effective_batch_size % self.batch_size:
                raise ValueError(
                    f"effective_batch_size {self.effective_batch_size} is not a multiple of batch_size "
                    f"{self.batch_size}; pick a multiple"
                )
            object.__setattr__(self, "grad_accum", self.effective_batch_size // self.batch_size)
        return self


class AggregationConfig(Section):
    """How the server averages the client updates into the global adapter."""

    name: str = Field(
        "fedavg",
        description="registered aggregator (fedhello strategies lists them); the robust median, trimmed_mean and "
        "multi_krum merge each tensor (Krum: each layer) over the clients that trained it (docs/robust.md)",
    )
    weighting: Literal["uniform", "samples"] = Field(
        "uniform",
        description="average client updates equally or by sample count (robust aggregators: uniform only, a sample "
        "count is a claim a hostile client can inflate)",
    )
    trim_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=0.5,
        description="trimmed_mean: share beta of a tensor's m contributors dropped at each end, per coordinate "
        "(floor(beta*m): with 0.2, one of 5 to 9 contributors, none below 5)",
    )
    byzantine: int = Field(
        1,
        ge=0,
        description="multi_krum: f, the hostile clients assumed among a layer's contributors; Krum keeps the m - f "
        "best of m and needs m > 2f + 2 (fewer: that layer gets the coordinate-wise median)",
    )
    server_optimizer: Literal["none", "fedavgm", "fedadam", "fedyogi", "fedadagrad"] = Field(
        "none",
        description="a server optimizer stepping the global adapter along the aggregate's change (the pseudo-gradient; "
        "Flower's FedAvgM / FedAdam / FedYogi / FedAdagrad rules), per entry: a layer nobody trained in a round keeps "
        "its value and its moments; wraps any aggregator (docs/robust.md)",
    )
    server_lr: float | None = Field(
        None,
        gt=0.0,
        description="server optimizer's learning rate (None: Flower's default, fedavgm 1.0, fedadam 0.1, fedyogi "
        "0.01, fedadagrad 0.1)",
    )
    server_momentum: float = Field(
        0.9,
        ge=0.0,
        lt=1.0,
        description="fedavgm: server momentum mu (Hsu et al. 2019 use 0.9; Flower's default 0 is plain FedAvg)",
    )
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="fedadam, fedyogi: first-moment decay (Flower's default)")
    beta2: float = Field(0.99, ge=0.0, lt=1.0, description="fedadam, fedyogi: second-moment decay (Flower's default)")
    tau: float = Field(
        1e-3, gt=0.0, description="fedadam, fedyogi, fedadagrad: adaptivity, added to sqrt(v) (Flower's default)"
    )


class PrivacyConfig(Section):
    """Client-level differential privacy of the per-layer updates (docs/privacy.md): every client's change is clipped
    to `clip_norm` and Gaussian noise of `noise_multiplier x clip_norm` is added to each tensor entry's sum over
    the clients that trained it, so a layer averaged over few clients gets proportionally more noise on its mean."""

    mode: Literal["off", "server", "client", "local"] = Field(
        "off",
        description="off; server (the server clips every update and noises the sums: a trusted server); client "
        "(clients clip, the server noises the sums: pairs with secure aggregation); local (clients clip and add the "
        "whole noise to their own upload: nobody is trusted, more noise)",
    )
    noise_multiplier: float = Field(
        1.0, ge=0.0, description="z: noise standard deviation over the clip norm, per entry of a tensor's sum"
    )
    clip_norm: float = Field(
        1.0, gt=0.0, description="L2 bound of a client's whole change in a round (the first one with adaptive_clip)"
    )
    adaptive_clip: bool = Field(
        False, description="adapt the clip norm to a quantile of the update norms (Andrew et al. 2021, as Flower)"
    )
    target_quantile: float = Field(
        0.5, ge=0.0, le=1.0, description="adaptive_clip: the share of clients whose change should fit the norm"
    )
    clip_lr: float = Field(0.2, gt=0.0, description="adaptive_clip: the clip norm's geometric learning rate")
    clipped_count_stddev: float | None = Field(
        None,
        gt=0.0,
        description="adaptive_clip: noise on the count of unclipped clients (None: clients_per_round / 20)",
    )
    delta: float = Field(1e-5, gt=0.0, lt=1.0, description="the delta of the (epsilon, delta) the run reports")
    max_epsilon: float | None = Field(None, gt=0.0, description="the privacy budget (None: no budget)")
    on_exhausted: Literal["refuse", "stop"] = Field(
        "refuse",
        description="with max_epsilon: refuse a config whose rounds would spend more, or run and stop cleanly "
        "before the round that would",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:  # noqa: ANN401 - a raw value
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


class SecureConfig(Section):
    """Secure aggregation (docs/privacy.md): the server learns only each tensor's sum over the clients that trained
    it (per-tensor pairwise masks, SecAgg+ with Flower's primitives)."""

    enabled: bool = Field(False, description="mask every upload so the server sees only per-tensor sums")
    bits: int = Field(32, ge=8, le=62, description="quantisation: integers modulo 2^bits")
    clip_range: float = Field(
        0.5, gt=0.0, description="quantisation: each change entry is clipped to [-clip_range, clip_range]"
    )
    threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="share of a round's clients whose secret shares recover a dropped client"
    )
    min_contributors: int = Field(
        2, ge=2, description="fewest uploaders a tensor's sum is released for (fewer: left out of the round)"
    )


class CheckpointConfig(Section):
    """Resumable checkpoints in RUN_DIR/checkpoint (fedhello run --resume RUN_DIR)."""

    every: int = Field(
        1, ge=0, description="write a resumable checkpoint every N rounds and after the last (0 = never)"
    )


class ReliabilityConfig(Section):
    """Lost, late and malformed client updates: simulated dropout, timeouts, validation, quorum."""

    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="simulated probability that a sampled client never replies (seeded)"
    )
    client_timeout_s: float | None = Field(
        None, gt=0.0, description="a client whose update took longer than this many seconds is dropped"
    )
    min_clients: int = Field(1, ge=1, description="fewest accepted updates a round needs to be aggregated")
    on_too_few: Literal["retry", "skip"] = Field(
        "skip", description="when fewer than min_clients updates arrive: re-send the round, or skip it"
    )
    max_retries: int = Field(2, ge=0, description="re-sends of a round (on_too_few=retry) before it is skipped")
    validate_updates: bool = Field(True, description="check keys, shapes, dtypes and finiteness of every update")
    norm_bound: float | None = Field(
        None,
        gt=0.0,
        description="reject an update whose RMS change exceeds norm_bound x the median of the round's "
        "well-formed updates, all attempts together (None = off)",
    )
    num_samples_bound: float | None = Field(
        10.0,
        gt=0.0,
        description="engines where the server does not know the clients' partition sizes (flower-deploy): "
        "reject an update claiming more than num_samples_bound x the median claim of the round (None = off; "
        "local and flower-sim instead require the claim to equal the server's own partition size)",
    )
    max_num_samples: int | None = Field(
        None,
        ge=0,
        description="flower-deploy: reject an update claiming more than this many training samples (None = no cap)",
    )


class AttackConfig(Section):
    """Simulated hostile clients (off by default): chosen clients send a poisoned update instead of the one they
    trained, to measure how an aggregator (aggregation.name) holds up; docs/robust.md."""

    hostile: int = Field(
        0,
        ge=0,
        description="how many clients are hostile, drawn once from the run's seed and hostile for the whole run "
        "(0 = none; or name them in hostile_ids)",
    )
    hostile_ids: list[int] = Field(
        default_factory=list, description="the hostile clients by id, instead of a seeded draw of `hostile` of them"
    )
    kind: Literal["sign_flip", "scaled", "random"] = Field(
        "sign_flip",
        description="what a hostile client sends, W the global tensor and W_i its trained one: sign_flip "
        "W - scale*(W_i - W), scaled W + scale*(W_i - W), random W + Gaussian noise of scale x the RMS of its "
        "honest change of that tensor (seeded per seed, round and client)",
    )
    scale: float = Field(
        1.0, gt=0.0, description="the attack's factor s (kind scaled: e.g. 10; 1 would send the honest update)"
    )

    @field_validator("hostile_ids")
    @classmethod
    def _distinct_ids(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or any(i < 0 for i in value):
            raise ValueError("an id repeats or is negative; give distinct client ids >= 0")
        return sorted(value)

    @property
    def enabled(self) -> bool:
        """Whether any client is hostile."""
        return bool(self.hostile or self.hostile_ids)


class FlowerConfig(Section):
    """The Flower engines (--engine flower-sim, flower-deploy): resources, processes, node data, security."""

    supernodes: int = Field(
        2, gt=0, description="flower-deploy: SuperNodes started on 127.0.0.1; node i serves clients c with c % n == i"
    )
    client_cpus: float = Field(
        1.0, gt=0.0, description="flower-sim: CPU cores reserved per virtual client (one Ray actor each)"
    )
    client_gpus: float | None = Field(
        None,
        ge=0.0,
        description="flower-sim: GPU share reserved per virtual client; Ray hides the GPU from actors with 0 (None = "
        "auto: with train.device cuda/auto and a visible GPU, the GPUs are shared by the actors that run at once)",
    )
    round_timeout_s: float | None = Field(
        None,
        gt=0.0,
        description="seconds to wait for a round's replies; clients still missing are lost for the round "
        "(None: wait until Flower reports their node down)",
    )
    isolation: Literal["process", "subprocess"] = Field(
        "process",
        description="flower-deploy: 'process' = each SuperNode's ClientApps run in one long-lived fedhello executor "
        "that keeps the model and data loaded (python -m fedhello.engines.flower.executor); 'subprocess' = Flower's "
        "default, a new flwr-clientapp process per message",
    )
    node_data: bool = Field(
        False,
        description="flower-deploy: every SuperNode trains on its own data (--node-config 'data-path=...'), one "
        "client per node (client id = partition-id); the server loads only its test split, proxy set and labels",
    )
    node_data_paths: list[str] = Field(
        default_factory=list,
        description="flower-deploy on loopback with node_data: the data-path of each SuperNode it starts, one per "
        "client (a real deployment gives each SuperNode its own with --node-config instead)",
    )

    node_shares: list[Literal["loss", "timing", "memory", "grad_norms", "method", "local_test", "errors"]] = Field(
        default_factory=lambda: ["loss", "timing", "memory", "grad_norms", "method", "local_test", "errors"],
        description="what a node sends besides its update tensors and sample count: loss (train_loss, steps), timing "
        "(seconds, step_seconds, step_cpu_seconds; reliability.client_timeout_s needs it), memory (weights_mb, "
        "peak_mem_mb, total_mem_mb), grad_norms (grad_norm.<layer>: per-layer gradient norms), method (a method's "
        "own metrics, e.g. self-pruned ranks), local_test (local_test.<global|personal|samples>: its scores on its "
        "local test split, federation.local_test), errors (a failing node's error text: its file paths, label values, "
        "column names); a node narrows it further with --node-config 'shares=\"loss,timing\"' (docs/flower.md)",
    )

    tls: bool = Field(
        False,
        description="flower-deploy: HTTPS between SuperLink, SuperNodes and flwr, with a CA and SuperLink "
        "certificate generated for the run (off: plain HTTP, allowed on loopback only)",
    )
    node_auth: bool = Field(
        False,
        description="flower-deploy: SuperNode authentication: each SuperNode gets a key pair, its public key "
        "is registered with `flwr supernode register`, and the SuperLink refuses any other node (implies tls)",
    )

    @model_validator(mode="after")
    def _paths_need_node_data(self) -> FlowerConfig:
        if self.node_data_paths and not self.node_data:
            raise ValueError("node_data_paths are given but node_data is false: set flower.node_data=true")
        return self


class OutputConfig(Section):
    """Where the run folder goes and what is written into it."""

    dir: str = Field("runs", description="parent folder of run folders")
    plot: bool = Field(True, description="draw RUN_DIR/accuracy.png at the end")
    save_adapter: bool = Field(True, description="save the final global adapter in RUN_DIR/adapter")
    loggers: list[str] = Field(
        default_factory=list,
        description="experiment loggers that follow every round: tensorboard (RUN_DIR/tensorboard), "
        "mlflow (a file store in RUN_DIR/mlruns, or mlflow_uri)",
    )
    mlflow_uri: str | None = Field(None, description="mlflow logger: tracking URI (None: file store RUN_DIR/mlruns)")


class EvalConfig(Section):
    """Standard LLM benchmarks through lm-evaluation-harness, on the global adapter (causal_lm only)."""

    lm_eval_tasks: list[str] = Field(
        default_factory=list,
        description="lm-eval task names scored after the last round, e.g. [arc_easy, hellaswag, mmlu_anatomy] "
        "(hub tasks need the hub; local YAML tasks live in lm_eval_include_path)",
    )
    lm_eval_every: int = Field(0, ge=0, description="also score them every N rounds (0 = after the last round only)")
    lm_eval_include_path: str | None = Field(None, description="folder of extra lm-eval task YAMLs (local tasks)")
    lm_eval_limit: int | None = Field(None, gt=0, description="score at most this many documents per task")
    lm_eval_num_fewshot: int | None = Field(None, ge=0, description="few-shot examples (None: each task's default)")
    lm_eval_batch_size: int = Field(8, gt=0, description="batch size of lm-eval's forward passes")


class RunConfig(Section):
    """A whole run: the top-level fields and one section per concern."""

    name: str = Field("fed-hello", description="run name: the run folder is <output.dir>/<name>-<time>")
    seed: int = Field(1, description="seed of every random choice (tiers, partitions, sampling, init, training)")
    task: str = Field(
        "text_classification",
        description="registered task: text_classification, image_classification, causal_lm (instruction tuning, "
        "scored with ROUGE-L)",
    )
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    data: DataConfig = DataConfig()
    partition: PartitionConfig = PartitionConfig()
    federation: FederationConfig = FederationConfig()
    tiers: list[TierConfig] = Field(
        default_factory=lambda: [
            TierConfig(share=1 / 3, layers=3),
            TierConfig(share=1 / 3, layers=4),
            TierConfig(share=1 / 3, layers=6),
        ],
        description="resource tiers of the clients, each a mapping of the tiers[].* fields; their shares sum to 1",
    )
    strategy: SerializeAsAny[StrategyConfig] = Field(
        default_factory=lambda: {"name": DEFAULT_STRATEGY},
        validate_default=True,
        description="the strategy and its options (see StrategyConfig)",
    )
    train: TrainConfig = TrainConfig()
    aggregation: AggregationConfig = AggregationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    secure: SecureConfig = SecureConfig()
    output: OutputConfig = OutputConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    reliability: ReliabilityConfig = ReliabilityConfig()
    attack: AttackConfig = AttackConfig()
    flower: FlowerConfig = FlowerConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if not self.tiers:
            raise ValueError("tiers: at least one tier is needed")
        total = sum(t.share for t in self.tiers)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"tiers: shares sum to {total:.4g}, they must sum to 1")
        if self.federation.clients_per_round > self.federation.num_clients:
            raise ValueError("federation.clients_per_round: larger than federation.num_clients; lower it")
        if self.reliability.min_clients > self.federation.clients_per_round:
            raise ValueError("reliability.min_clients: larger than federation.clients_per_round; lower it")
        if self.eval.lm_eval_tasks and self.task != "causal_lm":
            raise ValueError("eval.lm_eval_tasks: lm-eval scores causal language models; use task causal_lm or []")
        self._check_attack()
        return self

    def _check_attack(self) -> None:
        attack, clients = self.attack, self.federation.num_clients
        if attack.hostile and attack.hostile_ids:
            raise ValueError("attack.hostile_ids: attack.hostile also chooses hostile clients; set only one of them")
        if attack.kind == "scaled" and attack.scale == 1.0 and attack.enabled:
            raise ValueError("attack.scale: 1 makes a scaled update the honest one; set e.g. 10")
        if attack.hostile > clients:
            raise ValueError(f"attack.hostile: {attack.hostile} is more than the {clients} clients; lower it")
        if any(i >= clients for i in attack.hostile_ids):
            raise ValueError(f"attack.hostile_ids: not a client of the federation; use ids below {clients}")

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_options(cls, value: Any) -> StrategyConfig:  # noqa: ANN401 - a raw section
        return strategy_options(value)

    def check_tier_layers(self, num_layers: int) -> None:
        """Refuse (one line) a tier that declares more layers than the model's `num_layers`."""
        for i, tier in enumerate(self.tiers):
            if tier.layers is not None and tier.layers > num_layers:
                raise ConfigError(
                    f"tiers.{i}.layers",
                    f"{tier.layers} is more than the model's {num_layers} layers",
                    f"use at most {num_layers}",
                )


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:  # noqa: ANN401 - any YAML value
    """Set `a.b.c` in a raw config tree, creating sections on the way (`--set`, method presets, grid cells)."""
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for key in parents:
        if isinstance(node, list):  # an item of a list of sections: tiers.0.layers
            if not key.isdigit() or int(key) >= len(node):
                raise ConfigError(dotted, f"'{key}' is not an item of the list", f"use an index below {len(node)}")
            child = node[int(key)]
        else:
            child = node.setdefault(key, {})
        if not isinstance(child, dict | list):
            raise ConfigError(dotted, f"'{key}' is not a section", "override a leaf field")
        node = child
    if isinstance(node, list):
        if not leaf.isdigit() or int(leaf) >= len(node):
            raise ConfigError(dotted, f"'{leaf}' is not an item of the list", f"use an index below {len(node)}")
        node[int(leaf)] = value
    else:
        node[leaf] = value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:  # noqa: ANN401 - a config tree
    """A nested config tree as `{dotted.key: leaf value}` (lists are leaves)."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `a.b=value`; the value is read as YAML so numbers, lists and booleans keep their type. A
    malformed override is one line naming it (never a YAML traceback)."""
    if "=" not in text:
        raise ConfigError(text, "override is not of the form key=value", "write e.g. --set train.lr=0.001")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError("--set", f"'{text}' has no key before '='", "write key=value, e.g. --set train.lr=0.001")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(
            "--set",
            f"the value of '{text}' is not valid YAML ({_yaml_problem(err)})",
            "close every bracket and quote of the value, e.g. --set 'tiers=[{share: 1/3, layers: 2}, ...]'",
        ) from None
    return key.strip(), value


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The YAML parser's own words, on one line: what it expected and where (the column in the value)."""
    if isinstance(err, yaml.MarkedYAMLError):
        words = " ".join(part for part in (err.problem, err.context) if part)
        mark = err.problem_mark
        return f"{words} at column {mark.column + 1}" if mark is not None else words
    return str(err).splitlines()[0]


def _section_model(annotation: Any) -> type[BaseModel] | None:  # noqa: ANN401 - a type annotation
    """The section model a field holds: a model, a list of models (tiers) or an optional model."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _section_model(arg)
        if model is not None:
            return model
    return None


def config_fields(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every field of the run config (or of the section `model`) that holds a value, as (dotted name, pydantic
    field), in declaration order: the leaves of the sections, and a list of sections (`tiers`) followed by its
    items' fields, written `tiers[].share`. `fedhello config` and docs/config.md are generated from it."""
    for name, info in (model or RunConfig).model_fields.items():
        section = _section_model(info.annotation)
        if section is StrategyConfig:  # the fields of every strategy, then each strategy's own options
            yield from config_fields(section, f"{prefix}{name}.")
            yield from strategy_option_fields(f"{prefix}{name}.")
        elif section is None:
            yield f"{prefix}{name}", info
        elif typing.get_origin(info.annotation) is list:  # the list itself (its default), then its items' fields
            yield f"{prefix}{name}", info
            yield from config_fields(section, f"{prefix}{name}[].")
        else:
            yield from config_fields(section, f"{prefix}{name}.")


def strategy_option_fields(prefix: str = "strategy.") -> Iterator[tuple[str, FieldInfo]]:
    """The options strategies add to `StrategyConfig`, each once, its description ending with the strategies that
    have it."""
    owners: dict[str, list[str]] = {}
    infos: dict[str, FieldInfo] = {}
    for strategy, allocator in sorted(ALLOCATORS.items()):
        for key, info in allocator.Options.model_fields.items():
            if key not in StrategyConfig.model_fields:
                owners.setdefault(key, []).append(strategy)
                infos.setdefault(key, info)
    for key, info in infos.items():
        described = copy.copy(info)
        described.description = f"{info.description or ''} (strategies: {', '.join(owners[key])})".strip()
        yield f"{prefix}{key}", described


def config_sections() -> dict[str, tuple[type[BaseModel], str]]:
    """Each section of the run config: its key, its model and its description (the model's docstring)."""
    sections = {}
    for name, info in RunConfig.model_fields.items():
        section = _section_model(info.annotation)
        if section is not None:
            sections[name] = (section, (section.__doc__ or "").strip())
    return sections


def nearest_key(loc: tuple[Any, ...]) -> str | None:
    """The field a mistyped key `loc` most likely meant, written like `loc` ('federation' for 'federaton',
    'train.lr' for 'train.lrr', 'federation.rounds' for 'train.rounds'), or None."""
    leaf = str(loc[-1]) if loc else ""
    # the right name in the wrong section (train.rounds -> federation.rounds)
    elsewhere = [name for name, _ in config_fields() if name.rsplit(".", 1)[-1] == leaf and "[]" not in name]
    if len(elsewhere) == 1:
        return elsewhere[0]
    model: type[BaseModel] | None = RunConfig
    parents: list[str] = []
    for part in loc[:-1]:
        parents.append(str(part))
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(str(part))
        model = _section_model(info.annotation) if info is not None else None
    if model is None:
        return None
    close = difflib.get_close_matches(leaf, list(model.model_fields), n=1, cutoff=0.6)
    return ".".join([*parents, close[0]]) if close else None


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


# pydantic error type -> the fix it calls for, from the error's context (the constraint that failed)
_FIXES: dict[str, Callable[[dict[str, Any]], str]] = {
    "greater_than": lambda ctx: f"set a value > {ctx['gt']:g}",
    "greater_than_equal": lambda ctx: f"set a value >= {ctx['ge']:g}",
    "less_than": lambda ctx: f"set a value < {ctx['lt']:g}",
    "less_than_equal": lambda ctx: f"set a value <= {ctx['le']:g}",
    "string_too_short": lambda ctx: f"give at least {ctx['min_length']} character(s)",
    "string_too_long": lambda ctx: f"give at most {ctx['max_length']} character(s)",
    "literal_error": lambda ctx: f"use one of {ctx['expected']}",
    "int_parsing": lambda ctx: "write a whole number, e.g. 3",
    "int_type": lambda ctx: "write a whole number, e.g. 3",
    "int_from_float": lambda ctx: "write a whole number, e.g. 3",
    "float_parsing": lambda ctx: "write a number, e.g. 0.001",
    "float_type": lambda ctx: "write a number, e.g. 0.001",
    "bool_parsing": lambda ctx: "write true or false",
    "bool_type": lambda ctx: "write true or false",
    "string_type": lambda ctx: "write a text value (quote it if YAML reads it as something else)",
    "list_type": lambda ctx: "write a list, e.g. [a, b]",
    "missing": lambda ctx: "add it",
    "model_type": lambda ctx: "write a mapping of its fields (see fedhello config), or set one field: --set a.b=value",
    "dict_type": lambda ctx: "write a mapping of its fields (see fedhello config), or set one field: --set a.b=value",
}


def planned_uploads(config: RunConfig) -> frozenset:
    """The kinds of upload (`fedhello.plan.Upload`) a run's clients produce: the strategy's, plus rank-truncated
    ones when clients may send a pair below their plan's rank (`StrategyConfig.sends_lower_ranks`)."""
    uploads = set(ALLOCATORS.get(config.strategy.name).uploads)
    if config.strategy.sends_lower_ranks:
        uploads.add(Upload.TRUNCATED)
    return frozenset(uploads)


def compatible_aggregators(uploads: frozenset) -> list[str]:
    """Names of the registered aggregators that accept every kind in `uploads`."""
    return [name for name in AGGREGATORS.names() if uploads <= AGGREGATORS.get(name).accepts]


def validate_run(config: RunConfig) -> RunConfig:
    """The whole-run checks that need the registries: the strategy and the aggregator exist and can give a true
    result together. Every allocator declares the kinds of upload its plans produce (`Allocator.uploads`) and
    whether it needs Fisher scores (`needs_importance`); every aggregator the kinds it merges correctly
    (`Aggregator.accepts`). A pairing outside those declarations would not fail loudly later: FedAvg of
    rank-truncated factors silently broadcasts a rank-1 factor into every row of the global adapter, and a Fisher
    estimate on an empty proxy set scores every layer zero. `config_from_dict` -- every way a config is loaded --
    calls it; the registries load their built-ins themselves, so the result does not depend on what was imported
    before. Returns `config`; a problem is a one-line `ConfigError`."""
    strategy, aggregation = config.strategy.name, config.aggregation.name
    allocator = ALLOCATORS.get(strategy)
    AGGREGATORS.get(aggregation)
    uploads = planned_uploads(config)
    refused = sorted(uploads - AGGREGATORS.get(aggregation).accepts)
    if refused:
        source = f"strategy '{strategy}'"
        if config.strategy.sends_lower_ranks and refused == ["rank-truncated"]:
            source += " with self-pruning clients"
        raise ConfigError(
            "aggregation.name",
            f"'{aggregation}' cannot merge the {' and '.join(refused)} uploads of {source}",
            f"use one of {compatible_aggregators(uploads)}",
        )
    if config.aggregation.weighting == "samples" and not AGGREGATORS.get(aggregation).weighs_samples:
        raise ConfigError(
            "aggregation.weighting",
            f"'samples' has no meaning for aggregator '{aggregation}': it counts every client once (a sample count "
            "is a claim a hostile client could inflate)",
            "use uniform",
        )
    check_privacy(config, uploads)
    if allocator.needs_importance and config.data.proxy_size == 0:
        raise ConfigError(
            "data.proxy_size",
            f"0 leaves strategy '{strategy}' no proxy samples to estimate Fisher importance on",
            "hold out some training samples (e.g. 50), or use a strategy without importance such as rgd",
        )
    return config


def averaging_aggregators() -> list[str]:
    """The registered aggregators whose rule is a per-entry mean of the clients' changes (`Aggregator.averages`)."""
    return [name for name in AGGREGATORS.names() if AGGREGATORS.get(name).averages]


def check_privacy(config: RunConfig, uploads: frozenset) -> None:
    """Differential privacy and secure aggregation need an average with equal weights (the noise and the masks are
    calibrated on per-entry sums over the contributors); refuse in one line what they cannot protect, and a privacy
    budget the configured rounds would overspend (`privacy.on_exhausted: refuse`)."""
    privacy, secure, aggregation = config.privacy, config.secure, config.aggregation
    if not (privacy.enabled or secure.enabled):
        return
    feature = "privacy.mode" if privacy.enabled else "secure.enabled"
    if not AGGREGATORS.get(aggregation.name).averages:
        raise ConfigError(
            feature,
            f"aggregator '{aggregation.name}' is not an average of the clients' changes, so neither noise nor masks "
            "can be calibrated on its sums",
            f"use one of {averaging_aggregators()} (aggregation.name), or turn {feature} off",
        )
    if aggregation.weighting != "uniform":
        raise ConfigError(
            "aggregation.weighting",
            f"'{aggregation.weighting}' lets one client's weight exceed the others', unbounded by the clip norm "
            f"({feature})",
            "use uniform",
        )
    if privacy.adaptive_clip and privacy.noise_multiplier > 0:  # Flower's condition (compute_adaptive_noise_params)
        stddev = privacy.clipped_count_stddev or config.federation.clients_per_round / 20
        if privacy.noise_multiplier >= 2 * stddev:
            raise ConfigError(
                "privacy.clipped_count_stddev",
                f"{stddev:g} is too small for noise_multiplier {privacy.noise_multiplier:g} with adaptive_clip "
                "(the count's noise must exceed z / 2)",
                f"set it above {privacy.noise_multiplier / 2:g}, or lower privacy.noise_multiplier",
            )
    if privacy.adaptive_clip and privacy.mode == "local":
        raise ConfigError(
            "privacy.adaptive_clip",
            "local privacy has no trusted party to noise the count of clipped clients",
            "use privacy.mode client or server, or a fixed clip norm",
        )
    if secure.enabled:
        if privacy.mode == "server":
            raise ConfigError(
                "privacy.mode",
                "'server' clips each update on the server, which secure aggregation never shows it",
                "use client (clients clip, the server noises the sums) or local",
            )
        if Upload.TRUNCATED in uploads:
            raise ConfigError(
                "secure.enabled",
                f"strategy '{config.strategy.name}' sends rank-truncated factors, whose masks cannot cancel",
                "use a strategy with full-rank uploads",
            )
        if config.reliability.norm_bound is not None:
            raise ConfigError(
                "reliability.norm_bound",
                "the norm rule judges individual updates, which secure aggregation hides",
                "set it to null (the quantisation's secure.clip_range bounds every entry)",
            )
        if config.reliability.on_too_few == "retry":
            raise ConfigError(
                "reliability.on_too_few", "a secure round cannot be retried", "use skip with secure aggregation"
            )
    if privacy.enabled and privacy.max_epsilon is not None and privacy.on_exhausted == "refuse":
        from fedhello.accounting import epsilon_after, max_rounds, noise_for

        fed = config.federation
        args = (fed.num_clients, fed.clients_per_round, privacy.delta)
        spent = epsilon_after(fed.rounds, privacy.noise_multiplier, *args)
        if spent > privacy.max_epsilon:
            fit = max_rounds(privacy.max_epsilon, privacy.noise_multiplier, *args)
            noise = noise_for(privacy.max_epsilon, fed.rounds, *args)
            raise ConfigError(
                "privacy.max_epsilon",
                f"{fed.rounds} rounds at noise multiplier {privacy.noise_multiplier:g} spend epsilon {spent:.3g} "
                f"> {privacy.max_epsilon:g} at delta {privacy.delta:g}",
                f"federation.rounds <= {fit}, or privacy.noise_multiplier >= {noise:g}, or privacy.on_exhausted: stop",
            )


def _foreign_option(key: str, name: str) -> ConfigError:
    """The error for a `strategy:` key the named strategy does not have: whose option it is, or the nearest own."""
    owners = [n for n, allocator in ALLOCATORS.items() if key in allocator.Options.model_fields]
    field = f"strategy.{key}"
    if owners:
        return ConfigError(
            field, f"not an option of strategy '{name}'", f"remove it; it is an option of {', '.join(owners)}"
        )
    own = list(ALLOCATORS.get(name).Options.model_fields) if name in ALLOCATORS else []
    near = difflib.get_close_matches(key, own, n=1, cutoff=0.6)
    hint = f"did you mean 'strategy.{near[0]}'?" if near else f"strategy '{name}' has {', '.join(own)}"
    return ConfigError(field, "unknown key", f"{hint} (fedhello config strategy)")


def config_from_dict(tree: dict[str, Any]) -> RunConfig:
    """Validate a raw config tree (fields, then `validate_run`); the first problem becomes one `ConfigError`
    naming the field, the problem (with the value given) and the fix (the constraint it must meet, the nearest
    known key)."""
    try:
        config = RunConfig.model_validate(tree)
    except ValidationError as err:
        errors = err.errors()
        # a mistyped key first: it explains the "missing" error of the key it was meant to be
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        field = _format_location(first["loc"])
        if (
            first["type"] == "extra_forbidden"
            and first["loc"][:1] == ("lora",)
            and first["loc"][-1] in MOVED_TO_HETLORA
        ):
            key = first["loc"][-1]
            raise ConfigError(
                f"lora.{key}", f"moved to strategy.{key} (an option of strategy hetlora)", "set it there, with hetlora"
            ) from None
        if first["type"] == "extra_forbidden" and len(first["loc"]) == 2 and first["loc"][0] == "strategy":
            raise _foreign_option(str(first["loc"][1]), _strategy_name(tree)) from None
        if first["type"] == "extra_forbidden":
            near = nearest_key(first["loc"])
            where = "see docs/config.md or fedhello config"
            raise ConfigError(
                field, "unknown key", f"did you mean '{near}'? {where}" if near else f"remove it; {where}"
            ) from None
        message = first["msg"].removeprefix("Value error, ")
        if ": " in message and first["type"] == "value_error" and field == "<root>":
            field, message = message.split(": ", 1)
        fix = _FIXES.get(first["type"], lambda ctx: "")(first.get("ctx", {}))
        if first["type"] == "value_error" and "; " in message:  # our validators say "problem; what to do"
            message, fix = message.split("; ", 1)
        got = first.get("input")
        if got is not None and not isinstance(got, dict | list) and repr(got) not in message:
            message = f"{message}, got {got!r}"
        raise ConfigError(field, message, fix) from None
    return validate_run(config)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def drop_foreign_options(tree: dict[str, Any]) -> None:
    """Remove from a raw tree's `strategy:` the options of other strategies than the one it names: when a layer of
    configuration (a file over its `base:`, `--set` over the file, a method preset over the experiment) switches
    the strategy, the options that came for the previous one (`pattern` when `fim+gd` becomes `fill`) no longer
    apply. A key no strategy has stays, so a typo is still an error; so does a foreign option written together
    with the name it does not fit."""
    section = tree.get("strategy")
    if not isinstance(section, dict) or section.get("name", DEFAULT_STRATEGY) not in ALLOCATORS:
        return
    own = set(ALLOCATORS.get(section.get("name", DEFAULT_STRATEGY)).Options.model_fields)
    known = {key for _, allocator in ALLOCATORS.items() for key in allocator.Options.model_fields}
    for key in [k for k in section if k in known and k not in own]:
        del section[key]


# fields that moved: lora.* -> strategy.* of strategy hetlora (December 2026, methods as folders), with the value
# they had in every run that was not HetLoRA's
MOVED_TO_HETLORA = {"rank_scaling": "fixed", "self_prune_threshold": 0.0, "self_prune_ratio": 0.75}


def upgrade_saved_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A run folder's config.yaml written by an older fedhello, in today's layout (in place, and returned): the LoRA
    fields that moved to HetLoRA's options are dropped where they hold the value every other run had, and the dump
    of every strategy option (older versions saved all of them) keeps only the named strategy's. A HetLoRA run of
    the old layout stays as it is and is refused (`lora.rank_scaling` has moved), since its strategy changed too."""
    lora = tree.get("lora")
    if isinstance(lora, dict):
        for key, old in MOVED_TO_HETLORA.items():
            if key in lora and lora[key] == old:
                del lora[key]
    drop_foreign_options(tree)
    return tree


def _strategy_name(tree: dict[str, Any]) -> Any:  # noqa: ANN401 - whatever the tree holds
    section = tree.get("strategy")
    return section.get("name", DEFAULT_STRATEGY) if isinstance(section, dict) else DEFAULT_STRATEGY


def read_yaml_tree(path: Path, seen: tuple[Path, ...] = (), saved: bool = False) -> dict[str, Any]:
    """Read a config file; a top-level `base: other.yaml` (relative to the file) is loaded first and
    this file's values are merged over it (a file that switches the strategy drops the base's options of the
    other one, `drop_foreign_options`). `saved`: the file is a run folder's own config.yaml, which an older
    fedhello may have written (`upgrade_saved_tree`)."""
    if not path.is_file():
        raise ConfigError("CONFIG", f"file '{path}' does not exist", "pass a YAML file, e.g. configs/default.yaml")
    if path.resolve() in seen:
        raise ConfigError("base", f"'{path}' includes itself", "remove the cycle of base: files")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError("CONFIG", f"'{path}' is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError("CONFIG", f"'{path}' must hold a mapping of sections")
    if saved:
        upgrade_saved_tree(tree)
    base = tree.pop("base", None)
    if base is not None:
        below = read_yaml_tree(path.parent / str(base), (*seen, path.resolve()))
        merged = _merge(below, tree)
        if _strategy_name(merged) != _strategy_name(below):
            drop_foreign_options(merged)
        tree = merged
    return tree


def load_config(path: str | Path | None, overrides: list[str] | None = None, saved: bool = False) -> RunConfig:
    """Read a YAML config (or the defaults when `path` is None) and apply `key=value` overrides. `saved`: a run
    folder's own config.yaml (see `read_yaml_tree`)."""
    tree = read_yaml_tree(Path(path), saved=saved) if path is not None else {}
    before = _strategy_name(tree)
    for override in overrides or []:
        key, value = parse_override(override)
        set_dotted(tree, key, value)
    if _strategy_name(tree) != before:  # --set strategy.name=...: the file's options of the old strategy go
        drop_foreign_options(tree)
    return config_from_dict(tree)


def dump_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
