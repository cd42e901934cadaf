"""Train replies: parse them into updates and screen out the ones a server must not merge.

A reply is refused, with its node id and a reason, when the client failed (``error``), its content
is not the declared payload (``payload``: exactly one ArrayRecord, one MetricRecord with a
positive example count and, when the server asked for them, the ``statistics`` ConfigRecord with
only its declared keys), its state dict does not fit the global model or holds NaN/Inf (see
:func:`dmm_fed.validation.check_update`), or its task vector is a norm outlier (``norm``).
Replies that never arrive are absent from the round (Flower's ``timeout``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from logging import WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import log

from dmm_fed.data import NUM_CLASSES
from dmm_fed.dmm import ClientUpdate
from dmm_fed.layout import StateDict
from dmm_fed.statistics import ACTIVATION_PREFIX, STATISTICS_KEY, unflatten_targets
from dmm_fed.validation import InvalidUpdate, check_update, norm_outliers

STATISTICS_FIELDS = frozenset({"label-counts", "domain", "partition-id"})
"""Keys a ``statistics`` record may hold besides ``act.<layer>.mean/var``."""


def parse_reply(
    content: RecordDict, sender: int, weighted_by_key: str = "num-examples",
    require_statistics: bool = False,
) -> ClientUpdate:
    """A train reply's content as a :class:`ClientUpdate`; :class:`InvalidUpdate` (reason
    ``payload``) if it is not exactly the declared payload."""
    def refuse(detail: str) -> InvalidUpdate:
        return InvalidUpdate("payload", detail)

    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        raise refuse("expected exactly one ArrayRecord and one MetricRecord")
    extra = sorted(set(content.config_records) - {STATISTICS_KEY})
    if extra:
        raise refuse(f"unexpected ConfigRecord(s) {extra}")
    arrays = next(iter(content.array_records.values()))
    metrics = next(iter(content.metric_records.values()))
    if weighted_by_key not in metrics:
        raise refuse(f"MetricRecord lacks '{weighted_by_key}'")
    num_examples = metrics[weighted_by_key]
    if isinstance(num_examples, list) or not num_examples > 0:
        raise refuse(f"'{weighted_by_key}' must be a positive number, got {num_examples}")
    if require_statistics and STATISTICS_KEY not in content.config_records:
        raise InvalidUpdate("statistics", f"no '{STATISTICS_KEY}' ConfigRecord")
    stats = content.config_records.get(STATISTICS_KEY, ConfigRecord())
    unknown = sorted(k for k in stats if k not in STATISTICS_FIELDS
                     and not k.startswith(ACTIVATION_PREFIX))
    if unknown:
        raise refuse(f"undeclared statistics {unknown[:5]}")
    counts = stats.get("label-counts")
    acts = {k[len(ACTIVATION_PREFIX):]: v for k, v in stats.items()
            if k.startswith(ACTIVATION_PREFIX)}
    try:
        return ClientUpdate(
            state=arrays.to_torch_state_dict(),
            num_examples=int(num_examples),
            label_counts=[int(c) for c in counts] if counts is not None else None,
            activation_stats=unflatten_targets(acts),
            name=f"{stats.get('partition-id', sender)}:{stats.get('domain', '?')}",
        )
    except (ValueError, KeyError, TypeError) as err:
        raise refuse(str(err)) from err


def _sort_key(name: str) -> tuple[int, str]:
    head = name.split(":", 1)[0]
    return (int(head), name) if head.isdigit() else (2**63, name)


@dataclass
class Screened:
    """The usable replies of a round (as updates and as messages) and the refused ones."""

    updates: list[ClientUpdate] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # node, reason, detail

    def metrics(self) -> dict[str, int]:
        """Counts for the round's MetricRecord: usable, rejected, and rejected per reason."""
        counts = Counter(reason for _, reason, _ in self.rejected)
        return {"replies-usable": len(self.updates), "replies-rejected": len(self.rejected),
                **{f"rejected-{reason}": n for reason, n in sorted(counts.items())}}


def screen_replies(
    replies: Iterable[Message],
    reference: StateDict,
    param_keys: Sequence[str],
    weighted_by_key: str = "num-examples",
    require_statistics: bool = False,
    norm_factor: float = 0.0,
    num_classes: int = NUM_CLASSES,
) -> Screened:
    """Parse and check every reply against the global state ``reference`` (which it was trained
    from); the usable ones are sorted by partition id (else node id) so that clusters, teacher
    order and seeds do not depend on arrival order. Every refusal is logged."""
    out = Screened()
    for msg in replies:
        node = msg.metadata.src_node_id
        try:
            if msg.has_error():
                raise InvalidUpdate("error", str(msg.error.reason))
            update = parse_reply(msg.content, node, weighted_by_key, require_statistics)
            check_update(update, reference, num_classes)
        except InvalidUpdate as err:
            out.rejected.append((node, err.reason, str(err)))
            continue
        out.updates.append(update)
        out.messages.append(msg)
    for i in sorted(norm_outliers(reference, out.updates, param_keys, norm_factor), reverse=True):
        node = out.messages[i].metadata.src_node_id
        out.rejected.append((node, "norm", f"norm: task vector over {norm_factor:g}x the median"))
        del out.updates[i], out.messages[i]
    for node, _reason, detail in out.rejected:
        log(WARNING, "Refusing the reply of node %d: %s", node, detail)
    order = sorted(range(len(out.updates)), key=lambda i: _sort_key(out.updates[i].name))
    out.updates = [out.updates[i] for i in order]
    out.messages = [out.messages[i] for i in order]
    return out
