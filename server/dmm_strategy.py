"""``DMMStrategy``: a Flower Message-API strategy that aggregates with DMM instead of averaging.

Drop it into any ``ServerApp``::

    from server.dmm_strategy import DMMStrategy
    from dmm_fed.dmm import DMMConfig

    strategy = DMMStrategy(model_factory=lambda: MyNet(), dmm=DMMConfig(), min_available_nodes=4)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(MyNet().state_dict()),
                            num_rounds=1, timeout=600)

Clients may reply with Flower's standard ``arrays`` + ``metrics`` (``num-examples``) only: the
BatchNorm running statistics travel in the state dict. When a reply also carries a ConfigRecord
``statistics`` (``label-counts``, activation statistics ``act.<layer>.mean/var`` for norm layers
without running stats), DMM uses them. The train config sent to clients carries
``send-statistics = True`` so that clients which can, do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from dmm_fed.dmm import ClientUpdate, DMMConfig, DMMOutput, dmm_merge
from dmm_fed.layout import StateDict
from dmm_fed.report import write_json
from dmm_fed.statistics import ACTIVATION_PREFIX, STATISTICS_KEY, unflatten_targets


def parse_reply(
    content: RecordDict, sender: int, weighted_by_key: str = "num-examples"
) -> ClientUpdate:
    """A train reply's content as a :class:`ClientUpdate`; ``ValueError`` if it is malformed."""
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        raise ValueError("expected exactly one ArrayRecord and one MetricRecord")
    arrays = next(iter(content.array_records.values()))
    metrics = next(iter(content.metric_records.values()))
    if weighted_by_key not in metrics:
        raise ValueError(f"MetricRecord lacks '{weighted_by_key}'")
    num_examples = metrics[weighted_by_key]
    if isinstance(num_examples, list) or num_examples <= 0:
        raise ValueError(f"'{weighted_by_key}' must be a positive number, got {num_examples}")
    stats = content.config_records.get(STATISTICS_KEY, ConfigRecord())
    counts = stats.get("label-counts")
    acts = {k[len(ACTIVATION_PREFIX):]: v for k, v in stats.items()
            if k.startswith(ACTIVATION_PREFIX)}
    return ClientUpdate(
        state=arrays.to_torch_state_dict(),
        num_examples=int(num_examples),
        label_counts=[int(c) for c in counts] if counts is not None else None,
        activation_stats=unflatten_targets(acts),
        name=f"{stats.get('partition-id', sender)}:{stats.get('domain', '?')}",
    )


def _sort_key(name: str) -> tuple[int, str]:
    head = name.split(":", 1)[0]
    return (int(head), name) if head.isdigit() else (2**63, name)


def usable_updates(
    replies: Iterable[Message], weighted_by_key: str = "num-examples"
) -> tuple[list[ClientUpdate], list[RecordDict]]:
    """The well-formed train replies as updates (with their contents), sorted by partition id
    (else node id) so that clusters, teacher order and synthesis seeds do not depend on arrival
    order; failed and malformed replies are logged and left out."""
    updates, contents = [], []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            log(WARNING, "DMM: node %d failed: %s", node, msg.error.reason)
            continue
        try:
            updates.append(parse_reply(msg.content, node, weighted_by_key))
        except (ValueError, KeyError, TypeError) as err:
            log(WARNING, "DMM: ignoring reply of node %d: %s", node, err)
            continue
        contents.append(msg.content)
    order = sorted(range(len(updates)), key=lambda i: _sort_key(updates[i].name))
    return [updates[i] for i in order], [contents[i] for i in order]


class DMMStrategy(FedAvg):
    """FedAvg's sampling and messaging, DMM's aggregation (cluster, merge, synthesise, distil).

    Parameters
    ----------
    model_factory : callable
        Builds the (uninitialised) model whose state dicts the clients exchange.
    dmm : DMMConfig
        Every DMM knob; see :class:`dmm_fed.dmm.DMMConfig`.
    artifact_dir : Path, optional
        Where each round's report and similarity matrix go (``round-<r>-dmm.json``).
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg` (sampling, minimum nodes, keys).
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        dmm: DMMConfig | None = None,
        artifact_dir: Path | None = None,
        **fedavg_kwargs,
    ) -> None:
        super().__init__(**fedavg_kwargs)
        self.model_factory = model_factory
        self.dmm = dmm or DMMConfig()
        self.artifact_dir = artifact_dir
        self.outputs: dict[int, DMMOutput] = {}
        self.updates: dict[int, list[ClientUpdate]] = {}
        self.bases: dict[int, StateDict] = {}
        self._global: ArrayRecord | None = None
        self._sent_at = 0.0

    def summary(self) -> None:
        super().summary()
        d = self.dmm
        log(INFO, "\t└──> DMM: merge=%s bn=%s threshold=%s clusters=%s student=%s teachers=%s",
            d.merge_method, d.bn_merge, d.similarity_threshold, d.num_clusters or "auto",
            d.student_init, d.teachers)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        self._sent_at = time.perf_counter()
        config["send-statistics"] = True
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        client_seconds = time.perf_counter() - self._sent_at
        updates, contents = usable_updates(replies, self.weighted_by_key)
        log(INFO, "aggregate_train (DMM): %d usable replies", len(updates))
        if not updates or self._global is None:
            return None, None
        base = self._global.to_torch_state_dict()
        output = dmm_merge(
            base, updates, self.model_factory, self.dmm,
            progress=lambda m: log(INFO, "DMM round %d: %s", server_round, m),
        )
        self.outputs[server_round], self.updates[server_round] = output, updates
        self.bases[server_round] = base
        report = output.report
        report.seconds = {"clients": client_seconds, **report.seconds}
        log(INFO, "DMM round %d: clusters %s, phase seconds %s%s", server_round, report.clusters,
            {k: round(v, 2) for k, v in report.seconds.items()},
            f" ({report.skipped})" if report.skipped else "")
        if self.artifact_dir is not None:
            write_json(self.artifact_dir / f"round-{server_round}-dmm.json",
                       {"clients": [u.name for u in updates], **report.to_dict()})
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        metrics["dmm-num-clusters"] = max(report.clusters) + 1
        for phase, seconds in report.seconds.items():
            metrics[f"dmm-{phase}-s"] = seconds
        if report.synthesis_bn_loss:
            metrics["dmm-synthesis-bn-loss"] = sum(report.synthesis_bn_loss) / len(
                report.synthesis_bn_loss)
            metrics["dmm-distill-loss"] = report.distill_loss
        return ArrayRecord(output.state), metrics

