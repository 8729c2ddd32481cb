"""The ModelDeployment API's names: group, version, kind, plural, and the labels and annotations the operator sets."""

from __future__ import annotations

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
LIST_KIND = f"{KIND}List"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md",)
CRD_NAME = f"{PLURAL}.{GROUP}"

MANAGED_BY = "modeldeploy"
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"
MODEL_LABEL = f"{GROUP}/model"
