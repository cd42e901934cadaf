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
``send-statistics = True`` so that clients which can, do (``require_statistics=True`` refuses
replies without them). Replies are screened first (:class:`server.screened.ScreenedFedAvg`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord
from flwr.common import log
from torch import nn

from dmm_fed.dmm import ClientUpdate, DMMConfig, DMMOutput, dmm_merge
from dmm_fed.layout import StateDict
from dmm_fed.report import write_json
from server.replies import Screened
from server.screened import ScreenedFedAvg


class DMMStrategy(ScreenedFedAvg):
    """FedAvg's sampling, messaging and reply screening; DMM's aggregation (cluster, merge,
    synthesise, distil).

    Parameters
    ----------
    model_factory : callable
        Builds the (uninitialised) model whose state dicts the clients exchange.
    dmm : DMMConfig
        Every DMM knob; see :class:`dmm_fed.dmm.DMMConfig`.
    artifact_dir : Path, optional
        Where each round's report and similarity matrix go (``round-<r>-dmm.json``).
    **kwargs
        Passed to :class:`server.screened.ScreenedFedAvg` (``norm_factor``,
        ``require_statistics``) and Flower's ``FedAvg`` (sampling, minimum nodes, keys).
    """

    request_statistics = True

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        dmm: DMMConfig | None = None,
        artifact_dir: Path | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model_factory = model_factory
        self.dmm = dmm or DMMConfig()
        self.artifact_dir = artifact_dir
        self.outputs: dict[int, DMMOutput] = {}
        self.updates: dict[int, list[ClientUpdate]] = {}
        self.bases: dict[int, StateDict] = {}

    def summary(self) -> None:
        super().summary()
        d = self.dmm
        log(INFO, "\t└──> DMM: merge=%s bn=%s threshold=%s clusters=%s student=%s teachers=%s",
            d.merge_method, d.bn_merge, d.similarity_threshold, d.num_clusters or "auto",
            d.student_init, d.teachers)

    def aggregate_screened(
        self, server_round: int, screened: Screened
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        client_seconds = time.perf_counter() - self._sent_at
        updates = screened.updates
        log(INFO, "aggregate_train (DMM): %d usable replies", len(updates))
        base = self.global_state()
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
        metrics = self.train_metrics_aggr_fn([m.content for m in screened.messages],
                                             self.weighted_by_key)
        metrics["dmm-num-clusters"] = max(report.clusters) + 1
        for phase, seconds in report.seconds.items():
            metrics[f"dmm-{phase}-s"] = seconds
        if report.synthesis_bn_loss:
            metrics["dmm-synthesis-bn-loss"] = sum(report.synthesis_bn_loss) / len(
                report.synthesis_bn_loss)
            metrics["dmm-distill-loss"] = report.distill_loss
        return ArrayRecord(output.state), metrics

