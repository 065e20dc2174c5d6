//! Shards: the fixed partition of executions (and named breakers) that the nodes of a cluster
//! own one at a time. A store made for a single node has one shard.

use agentrack::ExecutionId;

/// A shard's number, `0..count`.
pub type ShardId = u16;

/// The shard an execution belongs to: fixed by its id, so any node can tell without asking.
///
/// The id's last eight bytes are random (UUIDv7), so executions spread evenly.
pub fn shard_of(id: ExecutionId, count: u16) -> ShardId {
    let bytes = id.as_uuid().into_bytes();
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&bytes[8..]);
    reduce(u64::from_be_bytes(tail), count)
}

/// The shard a named breaker belongs to (FNV-1a of the tenant-qualified name): one breaker per
/// name in the whole cluster, owned with its shard.
pub fn shard_of_name(name: &str, count: u16) -> ShardId {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    reduce(hash, count)
}

fn reduce(value: u64, count: u16) -> ShardId {
    let count = u64::from(count.max(1));
    // The remainder is below `count`, which fits a u16.
    u16::try_from(value % count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_spread_over_every_shard_and_always_land_on_the_same_one() {
        let mut seen = vec![0u32; 64];
        for _ in 0..6400 {
            let id = ExecutionId::new();
            let shard = shard_of(id, 64);
            assert_eq!(shard, shard_of(id, 64));
            seen[usize::from(shard)] += 1;
        }
        assert!(seen.iter().all(|n| (40..=160).contains(n)), "{seen:?}");
        assert_eq!(shard_of(ExecutionId::new(), 1), 0);
        assert_eq!(shard_of_name("acme/openai", 64), shard_of_name("acme/openai", 64));
    }
}
