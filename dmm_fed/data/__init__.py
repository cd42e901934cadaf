"""Data layer of dmm-fed: the four "digits" domains and Fashion-MNIST, prepared offline.

Run ``python -m dmm_fed.data.prepare`` once to fetch MNIST / optdigits and build the
*constructed* mnistm / synthdigits domains (``--domains fashion-mnist`` for Fashion-MNIST), then
use ``load_domain`` and ``to_tensors``.
"""

from dmm_fed.data.domains import (
    DATA_RANGE,
    DIGIT_DOMAINS,
    DOMAINS,
    IMAGE_SHAPE,
    NUM_CLASSES,
    DomainSplit,
    check_label_space,
    load_domain,
    num_classes,
    prepare,
    save_domain_grid,
    to_tensors,
)
from dmm_fed.data.paths import DatasetNotFoundError, default_data_root, resolve_data_root

__all__ = [
    "DATA_RANGE",
    "DIGIT_DOMAINS",
    "DOMAINS",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "DatasetNotFoundError",
    "DomainSplit",
    "check_label_space",
    "default_data_root",
    "load_domain",
    "num_classes",
    "prepare",
    "resolve_data_root",
    "save_domain_grid",
    "to_tensors",
]
