//! Several nodes on one store: shard ownership by lease with fencing, forwarding to the owner,
//! and following the shards other nodes own. On a store made for one node, the same code serves
//! its one shard, always here.

pub mod feed;
pub mod forward;
pub mod gather;
pub mod membership;
mod shards;
mod takeover;

pub use membership::{Member, View};
pub use shards::{Lease, LocalShard, Owner, Route, Shards};
pub use takeover::{Loader, RECONNECT};
