"""Data layer of dmm-fed: the four "digits" domains, prepared offline and loaded as arrays.

Run ``python -m dmm_fed.data.prepare`` once to fetch MNIST / optdigits and build the
*constructed* mnistm / synthdigits domains, then use ``load_domain`` and ``to_tensors``.
"""

from dmm_fed.data.domains import (
    DATA_RANGE,
    DOMAINS,
    IMAGE_SHAPE,
    NUM_CLASSES,
    DomainSplit,
    load_domain,
    prepare,
    save_domain_grid,
    to_tensors,
)
from dmm_fed.data.paths import DatasetNotFoundError, default_data_root, resolve_data_root

__all__ = [
    "DATA_RANGE",
    "DOMAINS",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "DatasetNotFoundError",
    "DomainSplit",
    "default_data_root",
    "load_domain",
    "prepare",
    "resolve_data_root",
    "save_domain_grid",
    "to_tensors",
]
