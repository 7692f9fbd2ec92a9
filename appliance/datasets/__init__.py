"""Datasets: immutable, content-addressed versions of tabular files with a reference profile."""

from appliance.datasets.service import (
    DatasetVersion,
    add_dataset,
    get_dataset_version,
    get_dataset_version_by_id,
    list_datasets,
    list_versions,
    load_profile,
    load_table,
)

__all__ = [
    "DatasetVersion",
    "add_dataset",
    "get_dataset_version",
    "get_dataset_version_by_id",
    "list_datasets",
    "list_versions",
    "load_profile",
    "load_table",
]
