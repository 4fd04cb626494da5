//! The SQL surface of the `pgml.*` API: finding `pgml.*` calls in a query and binding their arguments to
//! PostgresML's signatures (`call`), typing and substituting a statement's parameters over the extended protocol
//! (`params`), describing results (`statement`), and putting constant answers into bigger queries (`inline`).

pub mod call;
pub mod inline;
pub mod params;
pub mod statement;
