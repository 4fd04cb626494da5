//! The estimators Ocelot trains and serves, in plain Rust: linear and ridge regression (`linear`), logistic
//! regression over L-BFGS (`logistic`, `lbfgs`), gradient boosting and random forests over regression trees
//! (`boosting`, `forest`, `trees`), k-means (`kmeans`) and principal component analysis (`pca`); `algorithms` picks one from PostgresML's algorithm names
//! and hyperparameters, `preprocess` imputes and scales features, and `split` makes the train/test split.

pub mod algorithms;
pub mod boosting;
pub mod forest;
pub mod kmeans;
pub mod lbfgs;
pub mod linear;
pub mod logistic;
pub mod pca;
pub mod preprocess;
pub mod split;
pub mod trees;
