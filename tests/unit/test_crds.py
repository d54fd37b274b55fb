"""The checked-in CRDs are exactly what the models generate, and structurally sound."""

from pathlib import Path

import yaml

from taskorch.api.crd import KINDS, render

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = [
    REPO / "crds" / "taskorch.crds.yaml",
    REPO / "charts" / "taskorch" / "crds" / "taskorch.crds.yaml",  # Helm installs this copy
]


def test_checked_in_crds_are_fresh() -> None:
    for path in CHECKED_IN:
        assert path.read_text() == render(), f"{path} is stale: run `make crds`"


def _walk(node: object, path: str = "") -> list[str]:
    """Paths that break Kubernetes' structural-schema rules."""
    bad: list[str] = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title"):
            if key in node and path.count("/properties/") >= 0:
                bad.append(f"{path}: {key}")
        if ("properties" in node and "type" not in node) or not (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ):
            bad.append(f"{path}: no type")
        for key, child in node.get("properties", {}).items():
            bad += _walk(child, f"{path}/properties/{key}")
        if "items" in node:
            bad += _walk(node["items"], f"{path}/items")
    return bad


def test_schemas_are_structural_and_described() -> None:
    docs = list(yaml.safe_load_all(render()))
    assert [d["spec"]["names"]["kind"] for d in docs] == [k.kind for k in KINDS]
    for doc in docs:
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []
        spec = schema["properties"]["spec"]
        undescribed = [k for k, v in spec["properties"].items() if not v.get("description")]
        assert undescribed == [], "kubectl explain needs a description on every spec field"
        assert doc["spec"]["names"]["categories"] == ["taskorch"]
