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
TRACK_LABEL = f"{GROUP}/track"  # "canary" on the canary Deployment's pods (the stable pods carry none)
REVISION_LABEL = f"{GROUP}/revision"  # the revision a Deployment (or an analysis Job) runs or measures
REVISION_SPEC_ANNOTATION = f"{GROUP}/revision-spec"  # on the stable Deployment: the spec fields it runs
ANALYSIS_LABEL = f"{GROUP}/analysis"  # on analysis Jobs: "canary" or "loadtest"
