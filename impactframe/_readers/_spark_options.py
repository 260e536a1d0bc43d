"""The options of the Spark data source, checked on the driver (no pyspark needed here)."""

from __future__ import annotations

import dataclasses
import json

from .._constants import ENDPOINTS, ENV_API_KEY
from .._params import Query, check_choice, normalize_query, reject

__all__ = ["SPARK_OPTIONS", "SparkConfig", "int_option", "spark_config", "split_option"]

SPARK_OPTIONS = (
    "endpoint",
    "filter_by",
    "start_date",
    "end_date",
    "customer_email",
    "sort_order",
    "page_size",
    "metadata_keys",
    "npartitions",
    "base_url",
    "api_key_env",
)


@dataclasses.dataclass(frozen=True)
class SparkConfig:
    """The options, checked (on the driver, when ``load()`` runs), picklable, without the key."""

    endpoint: str
    query: Query
    metadata_keys: tuple[str, ...] | None
    npartitions: int | None
    base_url: str | None
    api_key_env: str


def split_option(name: str, value: str) -> list[str]:
    """Option `name`: a comma-separated list, or a JSON list (for values that hold commas)."""
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            reject(name, value, "a JSON list of strings or a comma-separated list")
        return items
    return [item.strip() for item in text.split(",") if item.strip()]


def int_option(options: dict[str, str], name: str) -> int | None:
    if name not in options:
        return None
    try:
        return int(options[name])
    except ValueError:
        reject(name, options[name], "an int")


def spark_config(options: dict[str, str]) -> SparkConfig:
    names = {name.lower(): value for name, value in options.items()}
    if "api_key" in names:
        msg = (
            "option api_key is not accepted (its value is not shown): options appear in plans "
            f"and logs. Set {ENV_API_KEY} in the environment of Spark's Python workers, or "
            "name another variable with the option api_key_env"
        )
        raise ValueError(msg)
    for name in names:
        if name not in SPARK_OPTIONS:
            reject("option", name, f"one of {', '.join(SPARK_OPTIONS)}")
    endpoint = check_choice(names.get("endpoint", "records"), "endpoint", ENDPOINTS)
    page_size = int_option(names, "page_size")
    query = normalize_query(
        endpoint,
        filter_by=split_option("filter_by", names["filter_by"]) if "filter_by" in names else None,
        start_date=names.get("start_date") or None,
        end_date=names.get("end_date") or None,
        sort_order=names.get("sort_order", "asc"),
        page_size=1000 if page_size is None else page_size,
        customer_email=names.get("customer_email") or None,
    )
    keys = None
    if "metadata_keys" in names:
        keys = tuple(sorted(set(split_option("metadata_keys", names["metadata_keys"]))))
        if not keys:
            reject("metadata_keys", names["metadata_keys"], "one metadata key or several")
    n = int_option(names, "npartitions")
    if n is not None and n < 1:
        reject("npartitions", n, "an int >= 1 (default: one per calendar month)")
    env = names.get("api_key_env", ENV_API_KEY)
    if not env or "=" in env:
        reject("api_key_env", env, "the name of an environment variable")
    return SparkConfig(endpoint, query, keys, n, names.get("base_url") or None, env)
