"""Reading Prometheus text in tests, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample_key(name: str, labels: dict[str, str]) -> str:
    """``name`` or ``name{k="v",...}`` with the labels sorted, as ``generate_latest`` writes."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def parse(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """(each family's type by its exposed name: a counter's ends in ``_total``; each sample's
    value by ``sample_key``)."""
    types: dict[str, str] = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        exposed = family.name + "_total" if family.type == "counter" else family.name
        types[exposed] = family.type
        for s in family.samples:
            values[sample_key(s.name, s.labels)] = s.value
    return types, values
