"""Reference results for Ocelot's in-proxy training, computed with scikit-learn and XGBoost.

Recreates PostgresML's example datasets (iris, diabetes unscaled, breast_cancer) as SQL that psql loads, trains the
reference estimators on PostgresML's `test_sampling => 'last'` split (the first rows train, the last test_size of
them test) and writes what Ocelot's results are compared with. Values are rounded through float32 first, because
the tables store FLOAT4 and Ocelot trains on what PostgreSQL returns.

Usage: reference.py OUT_DIR   (writes OUT_DIR/datasets.sql and OUT_DIR/reference.json)
"""

import json
import math
import os
import sys
import warnings

import numpy as np
from sklearn import datasets, linear_model, ensemble, cluster, metrics
import xgboost

TEST_SIZE = 0.25


def f32(a):
    # What Ocelot reads back: PostgreSQL prints a FLOAT4 as its shortest round-trip decimal, parsed as a double.
    shortest = np.vectorize(lambda v: float(str(np.float32(v))))
    return shortest(np.asarray(a, dtype=np.float64))


def split(x, y):
    n = len(x)
    # Ocelot (and PostgresML) round the test size half away from zero.
    n_test = int(math.floor(n * TEST_SIZE + 0.5))
    n_train = n - n_test
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def sql_table(name, columns, types, rows):
    cols = ", ".join(f'"{c}" {t}' for c, t in zip(columns, types))
    out = [f"DROP TABLE IF EXISTS {name} CASCADE;", f"CREATE TABLE {name} ({cols});"]
    out.append(f"COPY {name} FROM stdin;")
    for r in rows:
        out.append("\t".join(r))
    out.append("\\.")
    return "\n".join(out) + "\n"


def text(v):
    return str(np.float32(v))


def main(out_dir):
    # sklearn's LogisticRegression stops at max_iter=100 on the unscaled breast_cancer data and says so; that is
    # the reference PostgresML users get.
    warnings.filterwarnings("ignore")
    os.makedirs(out_dir, exist_ok=True)
    sql = []
    ref = {}

    iris = datasets.load_iris()
    ix = f32(iris.data)
    iy = iris.target.astype(np.int64)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width", "target"]
    sql.append(sql_table("iris", names, ["FLOAT4"] * 4 + ["INT4"],
                         [[text(v) for v in row] + [str(t)] for row, t in zip(ix, iy)]))

    diabetes = datasets.load_diabetes(scaled=False)
    dx = f32(diabetes.data)
    dy = f32(diabetes.target)
    dnames = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    sql.append(sql_table("diabetes", dnames + ["target"], ["FLOAT4"] * 11,
                         [[text(v) for v in row] + [text(t)] for row, t in zip(dx, dy)]))
    sql.append(f"CREATE VIEW diabetes_features AS SELECT {', '.join(dnames)} FROM diabetes;\n")

    bc = datasets.load_breast_cancer()
    bx = f32(bc.data)
    by = (bc.target == 0).astype(np.int64)
    sql.append(sql_table("breast_cancer", list(bc.feature_names) + ["malignant"],
                         ["FLOAT4"] * 30 + ["BOOLEAN"],
                         [[text(v) for v in row] + ["t" if t else "f"] for row, t in zip(bx, by)]))

    # Regression on diabetes.
    xtr, ytr, xte, yte = split(dx, dy)
    reg = {}
    for name, est in [
        ("linear", linear_model.LinearRegression()),
        ("ridge", linear_model.Ridge()),
        ("lasso", linear_model.Lasso()),
        ("elastic_net", linear_model.ElasticNet()),
    ]:
        est.fit(xtr, ytr)
        p = est.predict(xte)
        reg[name] = {
            "coef": est.coef_.tolist(),
            "intercept": float(est.intercept_),
            "predictions": p.tolist(),
            "r2": metrics.r2_score(yte, p),
        }
    for name, est in [
        ("xgboost", xgboost.XGBRegressor(tree_method="exact", random_state=0)),
        ("random_forest", ensemble.RandomForestRegressor(random_state=0)),
        ("bagging", ensemble.BaggingRegressor(n_estimators=100, random_state=0)),
        ("gradient_boosting_trees", ensemble.GradientBoostingRegressor(random_state=0)),
    ]:
        est.fit(xtr, ytr)
        reg[name] = {"r2": metrics.r2_score(yte, est.predict(xte))}
    ref["diabetes"] = reg
    # Every row trains (test_size 0 is not allowed by sklearn's split, so fit directly): for the sharded
    # per-row comparison.
    full = linear_model.LinearRegression().fit(dx, dy)
    ref["diabetes_all_rows"] = {"predictions": full.predict(dx).tolist()}

    # Classification on iris and breast_cancer.
    for data, x, y in [("iris", ix, iy), ("breast_cancer", bx, by)]:
        xtr, ytr, xte, yte = split(x, y)
        out = {}
        for name, est in [
            ("logistic_regression", linear_model.LogisticRegression()),
            ("xgboost", xgboost.XGBClassifier(tree_method="exact", random_state=0)),
            ("random_forest", ensemble.RandomForestClassifier(random_state=0)),
            ("bagging", ensemble.BaggingClassifier(n_estimators=100, random_state=0)),
            ("gradient_boosting_trees", ensemble.GradientBoostingClassifier(random_state=0)),
        ]:
            est.fit(xtr, ytr)
            p = est.predict(xte)
            out[name] = {
                "accuracy": metrics.accuracy_score(yte, p),
                "f1": metrics.f1_score(yte, p, average="macro"),
            }
        ref[data] = out

    # Clustering of diabetes's features (iris's last rows are all one species).
    xtr, _, xte, _ = split(dx, dy)
    km = cluster.KMeans(n_clusters=3, random_state=0, n_init=10).fit(xtr)
    ref["diabetes_kmeans"] = {"silhouette": metrics.silhouette_score(xte, km.predict(xte))}

    with open(os.path.join(out_dir, "datasets.sql"), "w") as f:
        f.write("".join(sql))
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
