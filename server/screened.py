"""``ScreenedFedAvg``: Flower's FedAvg that refuses bad replies and skips rounds with too few.

Every train reply is screened (:func:`server.replies.screen_replies`); refusals, and nodes that
did not reply within the round timeout, are logged with the node id and counted in the round's
metrics (``replies-rejected``, ``rejected-<reason>``, reason ``timeout`` for missing replies).
When fewer than ``min_train_nodes`` replies are usable the round is skipped with a warning and
the previous global model is kept (Flower's ``Strategy.start`` keeps it when aggregation returns
no arrays). ``round_offset`` numbers the rounds of a resumed run after those already done, so
that clients (whose randomness is seeded by the round) do exactly what they would have done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from dmm_fed.data import NUM_CLASSES
from dmm_fed.layout import StateDict
from server.replies import Screened, screen_replies

_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


class ScreenedFedAvg(FedAvg):
    """FedAvg with reply screening.

    Parameters
    ----------
    norm_factor : float
        Refuse task vectors whose norm exceeds this times the round's median (0: off).
    require_statistics : bool
        Refuse replies without the ``statistics`` record (it is asked for when
        ``request_statistics`` or this is true).
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.
    """

    request_statistics = False

    def __init__(self, norm_factor: float = 0.0, require_statistics: bool = False,
                 num_classes: int = NUM_CLASSES, **fedavg_kwargs: Any) -> None:
        super().__init__(**fedavg_kwargs)
        self.norm_factor = norm_factor
        self.num_classes = num_classes  # the length a reply's label-counts must have
        self.require_statistics = require_statistics
        self.round_offset = 0  # rounds already done before this start() (a resumed run)
        self.screened: dict[int, Screened] = {}
        self.train_metrics: dict[int, dict[str, Any]] = {}
        self.evaluate_metrics: dict[int, dict[str, Any]] = {}
        self._global: ArrayRecord | None = None
        self._sent_at = 0.0
        self._sent_to: list[int] = []
        self._restored_refusals: dict[int, list[dict[str, Any]]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        self._sent_at = time.perf_counter()
        if self.request_statistics or self.require_statistics:
            config["send-statistics"] = True
        rnd = server_round + self.round_offset
        messages = list(super().configure_train(rnd, arrays, config, grid))
        self._sent_to = [m.metadata.dst_node_id for m in messages]
        return messages

    def global_state(self) -> StateDict:
        """The global state dict the current round's clients trained from."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        return self._global.to_torch_state_dict()

    def screen(self, server_round: int, replies: Iterable[Message]) -> Screened | None:
        """The round's usable replies, or ``None`` (logged) when fewer than the minimum."""
        base = self.global_state()
        keys = [k for k, v in base.items() if v.is_floating_point()
                and not k.endswith(_STAT_SUFFIXES)]
        replies = list(replies)
        screened = screen_replies(replies, base, keys, self.weighted_by_key,
                                  self.require_statistics, self.norm_factor, self.num_classes)
        arrived = {m.metadata.src_node_id for m in replies}
        for node in self._sent_to:
            if node not in arrived:
                log(WARNING, "No reply from node %d within the round timeout", node)
                screened.rejected.append((node, "timeout", "no reply within the round timeout"))
        self.screened[server_round] = screened
        if len(screened.updates) < self.min_train_nodes:
            log(WARNING, "Round %d skipped: %d usable replies (%d refused), fewer than the "
                "minimum of %d; the global model stays as it was", server_round,
                len(screened.updates), len(screened.rejected), self.min_train_nodes)
            return None
        return screened

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rnd = server_round + self.round_offset
        screened = self.screen(rnd, replies)
        if screened is None:
            arrays, metrics = None, MetricRecord(self.screened[rnd].metrics())
        else:
            arrays, metrics = self.aggregate_screened(rnd, screened)
            metrics = metrics or MetricRecord()
            metrics.update(screened.metrics())
        self.train_metrics[rnd] = dict(metrics)
        return arrays, metrics

    def aggregate_screened(
        self, server_round: int, screened: Screened
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the usable replies (FedAvg here; subclasses merge differently)."""
        return super().aggregate_train(server_round, screened.messages)

    def refused(self) -> dict[int, list[dict[str, Any]]]:
        """Every refused reply so far, by round."""
        return {r: [{"node": n, "reason": reason, "detail": d} for n, reason, d in sc.rejected]
                for r, sc in self.screened.items()}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the strategy: per-round metrics and refusals."""
        return {"train-metrics": self.train_metrics, "evaluate-metrics": self.evaluate_metrics,
                "refused": {**self._restored_refusals, **self.refused()}}

    def load_state_dict(self, state: dict[str, Any], rounds_done: int) -> None:
        """Restore :meth:`state_dict` and continue numbering rounds after ``rounds_done``."""
        self.train_metrics = dict(state["train-metrics"])
        self.evaluate_metrics = dict(state["evaluate-metrics"])
        self._restored_refusals = dict(state["refused"])
        self.round_offset = rounds_done

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return super().configure_evaluate(server_round + self.round_offset, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        rnd = server_round + self.round_offset
        metrics = super().aggregate_evaluate(rnd, replies)
        if metrics is not None:
            self.evaluate_metrics[rnd] = dict(metrics)
        return metrics
