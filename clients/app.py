"""The dmm-fed ClientApp: private local training and local evaluation.

A client reads ``partition-id`` and ``num-partitions`` from its node config (set by the simulation
engine, or by ``flower-supernode --node-config`` in deployment), loads only its own partition and
replies with its full state dict (BatchNorm buffers included) and a few counts. Raw data never
leaves the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from dmm_fed.config import RunConfig, parse_run_config
from dmm_fed.data import resolve_data_root
from dmm_fed.data.federation import ClientData, client_data
from dmm_fed.privacy import noisy_bn_statistics, noisy_targets
from dmm_fed.statistics import (
    ACTIVATION_PREFIX,
    STATISTICS_KEY,
    activation_statistics,
    flatten_targets,
)
from dmm_fed.training import OptimizerConfig, evaluate, train


@lru_cache(maxsize=4)
def _cached_data(config: RunConfig, partition_id: int, num_partitions: int) -> ClientData:
    return client_data(
        resolve_data_root(config.data_root), config.domain_list, partition_id, num_partitions,
        config.dirichlet_alpha, config.seed, config.max_train_per_client, config.uses_text,
    )


def _setup(context: Context, overrides: Mapping[str, Any] | None) -> tuple[RunConfig, ClientData]:
    config = parse_run_config(context.run_config, overrides)
    torch.set_num_threads(config.num_threads)
    try:
        partition_id = int(context.node_config["partition-id"])
        num_partitions = int(context.node_config["num-partitions"])
    except KeyError as err:
        raise KeyError(
            "This ClientApp needs 'partition-id' and 'num-partitions' in its node config, e.g. "
            "flower-supernode --node-config \"partition-id=0 num-partitions=8\""
        ) from err
    return config, _cached_data(config, partition_id, num_partitions)


def _load_model(config: RunConfig, msg: Message) -> torch.nn.Module:
    model = config.new_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict(), strict=True)
    return model


def client_seed(config: RunConfig, partition_id: int, server_round: int) -> int:
    """The seed of a client's randomness in a round (run seed, round and partition)."""
    return config.seed * 100_003 + 1_009 * server_round + partition_id


def local_train(
    config: RunConfig, model: torch.nn.Module, data: ClientData, partition_id: int,
    server_round: int,
) -> float:
    """The client's private training step (seeded by :func:`client_seed`)."""
    seed = client_seed(config, partition_id, server_round)
    optimizer = OptimizerConfig(config.optimizer, config.learning_rate, config.momentum,
                                config.weight_decay)
    return train(model, data.x_train, data.y_train, config.local_epochs, config.batch_size,
                 optimizer, seed=seed)


def client_statistics(
    config: RunConfig, model: torch.nn.Module, data: ClientData, partition_id: int,
    noise_seed: int = 0,
) -> ConfigRecord:
    """The aggregate statistics DMM may use: label counts (if shared), the activation mean/var of
    norm layers without running stats (with ``statistics-noise``), the domain name and partition
    id. Nothing about single examples."""
    acts = activation_statistics(model, data.x_train)
    if config.statistics_noise > 0:
        acts = noisy_targets(acts, config.statistics_noise, noise_seed)
    stats = {f"{ACTIVATION_PREFIX}{k}": v for k, v in flatten_targets(acts).items()}
    if config.share_label_counts:
        stats["label-counts"] = data.label_counts()
    stats["domain"] = data.domain
    stats["partition-id"] = partition_id
    return ConfigRecord(stats)


def make_client_app(
    overrides: Mapping[str, Any] | None = None, mods: list[Mod] | None = None
) -> ClientApp:
    """A ClientApp; ``overrides`` (kebab-case run-config keys) win over the run config; ``mods``
    are Flower client mods wrapped around every call (e.g. to inject faults in tests)."""
    app = ClientApp(mods=mods)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        config, data = _setup(context, overrides)
        model = _load_model(config, msg)
        server_round = int(msg.content["config"].get("server-round", 0))
        partition_id = int(context.node_config["partition-id"])
        loss = local_train(config, model, data, partition_id, server_round)
        metrics = MetricRecord({"num-examples": len(data.y_train), "train-loss": loss})
        state = model.state_dict()
        noise_seed = client_seed(config, partition_id, server_round) + 7
        if config.statistics_noise > 0:
            state = noisy_bn_statistics(state, config.statistics_noise, noise_seed)
        content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})
        if msg.content["config"].get("send-statistics", False):
            content[STATISTICS_KEY] = client_statistics(config, model, data, partition_id,
                                                        noise_seed)
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        config, data = _setup(context, overrides)
        loss, acc = evaluate(_load_model(config, msg), data.x_test, data.y_test)
        metrics = MetricRecord(
            {"num-examples": len(data.y_test), "eval-loss": loss, "eval-accuracy": acc}
        )
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app


app = make_client_app()
