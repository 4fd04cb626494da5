//! The estimators Ocelot trains and serves, in plain Rust: linear and ridge regression (`linear`), logistic
//! regression over L-BFGS (`logistic`, `lbfgs`), gradient boosting and random forests over regression trees
//! (`boosting`, `forest`, `trees`), k-means (`kmeans`) and principal component analysis (`pca`); `algorithms` picks one from PostgresML's algorithm names
//! and hyperparameters, `preprocess` imputes and scales features, and `split` makes the train/test split.

pub(crate) mod algorithms;
pub(crate) mod boosting;
pub(crate) mod forest;
pub(crate) mod kmeans;
pub(crate) mod lbfgs;
pub(crate) mod linear;
pub(crate) mod logistic;
pub(crate) mod pca;
pub(crate) mod preprocess;
pub(crate) mod split;
pub(crate) mod trees;
