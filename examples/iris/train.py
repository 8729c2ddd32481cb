"""Train a small iris classifier and write a parameters directory.

Usage: python examples/iris/train.py OUT_DIR [--stump]

The iris data ships inside scikit-learn, so nothing is downloaded. OUT_DIR gets
the fitted pipeline (`model.joblib`) and `model.yaml`, which names the model,
its version, its flavor and its input/output schema for the generic server.
`--stump` fits a one-split decision tree instead of the logistic regression: a
worse model with the same schema, which answers differently on about a third of
the flowers (what a canary's prediction-change gate is for).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import joblib
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

MODEL_NAME = "iris"
MODEL_VERSION = "1.0.0"
ARTIFACT = "model.joblib"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def model_description(species: list[str], examples: list[float], accuracy: float, kind: str) -> dict[str, Any]:
    """The model.yaml content: identity, flavor, artifact and I/O schema."""
    return {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "flavor": "sklearn",
        "artifact": ARTIFACT,
        "description": f"Iris species from flower measurements ({kind}, test accuracy {accuracy:.3f}).",
        "inputs": [
            {
                "name": feature,
                "type": "number",
                "description": f"{feature.replace('_', ' ')} in centimetres",
                "minimum": 0.0,
                "maximum": 50.0,
                "example": example,
            }
            for feature, example in zip(FEATURES, examples)
        ],
        "outputs": [
            {"name": "species", "type": "string", "enum": species, "description": "Predicted iris species"},
        ],
    }


def train(out_dir: Path, stump: bool = False) -> Path:
    """Fit the pipeline (or a decision stump) and write OUT_DIR/model.joblib and OUT_DIR/model.yaml."""
    iris = load_iris()
    species = [str(name) for name in iris.target_names]
    labels = [species[i] for i in iris.target]
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, labels, test_size=0.25, random_state=0, stratify=labels
    )
    classifier = DecisionTreeClassifier(max_depth=1, random_state=0) if stump else LogisticRegression(max_iter=500)
    pipeline = make_pipeline(StandardScaler(), classifier)
    pipeline.fit(x_train, y_train)
    accuracy = float(pipeline.score(x_test, y_test))

    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, out_dir / ARTIFACT)
    kind = "decision stump" if stump else "logistic regression"
    description = model_description(species, [float(v) for v in iris.data[0]], accuracy, kind)
    (out_dir / "model.yaml").write_text(yaml.safe_dump(description, sort_keys=False))
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="parameters directory to write")
    parser.add_argument("--stump", action="store_true", help="fit a one-split decision tree (a worse model)")
    args = parser.parse_args()
    out_dir = train(args.out_dir, args.stump)
    print(f"wrote {out_dir}/{ARTIFACT} and {out_dir}/model.yaml")


if __name__ == "__main__":
    main()
