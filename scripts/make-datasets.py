#!/usr/bin/env python3
"""Writes data/datasets/*.csv, the toy datasets `pgml.load_dataset` creates, from scikit-learn's own copies.

PostgresML ships these as CSV files built from scikit-learn; Ocelot carries them in its binary so that
`pgml.load_dataset('iris')` needs no download. Each file is PostgreSQL CSV for `COPY ... FROM STDIN (FORMAT csv)`,
with no header, in scikit-learn's row order; the table each one fills is declared in
crates/inference/src/registry/datasets.rs. Run: python3 scripts/make-datasets.py (needs scikit-learn >= 1.1).
"""
import csv
import os

from sklearn import datasets

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "datasets")


def number(v):
    """A value as PostgreSQL reads it back: whole numbers without a fraction."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def write(name, rows):
    path = os.path.join(OUT, f"{name}.csv")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for r in rows:
            w.writerow(r)
    print(f"{path}: {len(rows)} rows")


def main():
    os.makedirs(OUT, exist_ok=True)
    iris = datasets.load_iris()
    write("iris", [[*map(number, x), int(t)] for x, t in zip(iris.data, iris.target)])

    # PostgresML's copy is the unscaled one (sex coded 1/2), not scikit-learn's default scaled version.
    diabetes = datasets.load_diabetes(scaled=False)
    write("diabetes", [[*map(number, x), number(t)] for x, t in zip(diabetes.data, diabetes.target)])

    digits = datasets.load_digits()
    write(
        "digits",
        [
            ["{" + ",".join("{" + ",".join(str(int(v)) for v in row) + "}" for row in img) + "}", int(t)]
            for img, t in zip(digits.images, digits.target)
        ],
    )

    # PostgresML's column "malignant" is true where scikit-learn's target is 0.
    cancer = datasets.load_breast_cancer()
    write(
        "breast_cancer",
        [[*map(number, x), "t" if t == 0 else "f"] for x, t in zip(cancer.data, cancer.target)],
    )

    linnerud = datasets.load_linnerud()
    write("linnerud", [[*map(number, x), *map(number, y)] for x, y in zip(linnerud.data, linnerud.target)])

    # PostgresML stores scikit-learn's hue in color_intensity and the reverse (its INSERT swaps them).
    wine = datasets.load_wine()
    names = list(wine.feature_names)
    hue, color = names.index("hue"), names.index("color_intensity")
    rows = []
    for x, t in zip(wine.data, wine.target):
        x = list(x)
        x[hue], x[color] = x[color], x[hue]
        rows.append([*map(number, x), int(t)])
    write("wine", rows)


if __name__ == "__main__":
    main()
