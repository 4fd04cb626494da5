//! Query routing (read/write splitting, shard keys, fan-out) will live here. Nothing routes yet: every query of a
//! pool goes to its default shard's primary (see `pool::Cluster::target`), and this module deliberately has no
//! code that would suggest otherwise.
