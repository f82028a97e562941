//! `--shard i/N`: N processes split one account's flows between them, with no
//! coordinator. A flow's shard is a pure function of its identity, the same on every
//! machine and in every version:
//!
//! ```text
//! shard(flow) = u64::from_be_bytes(SHA-256("{account_id}/{region}/{flow_name}")[0..8]) % N
//! ```
//!
//! (the text UTF-8 encoded; flow names cannot contain `/`).

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use appflow_model::FlowInfo;

/// Shard `index` of `count` (0-based, as AWS Batch numbers array jobs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    /// The one shard that owns every flow.
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Shard `index` of `count`; `text` is what the user wrote, for the error.
    pub fn new(index: u32, count: u32, text: &str) -> Result<Self> {
        let bad = |why: String| Error::BadShard {
            shard: text.to_string(),
            why,
        };
        if count == 0 {
            return Err(bad("the number of shards must be at least 1".to_string()));
        }
        if index >= count {
            return Err(bad(format!(
                "shards are numbered 0 to {} (0-based, like AWS_BATCH_JOB_ARRAY_INDEX)",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// `i/N`, e.g. `0/4`.
    pub fn parse(text: &str) -> Result<Self> {
        let (i, n) = text.split_once('/').ok_or_else(|| Error::BadShard {
            shard: text.to_string(),
            why: "expected i/N, e.g. 0/4".to_string(),
        })?;
        let number = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| Error::BadShard {
                shard: text.to_string(),
                why: format!("'{s}' is not a whole number"),
            })
        };
        Shard::new(number(i)?, number(n)?, text)
    }

    /// The shard of a flow among `count`: of `<account>/<region>/<flow>`.
    pub fn of(flow: &FlowInfo, count: u32) -> u32 {
        bucket(
            &format!("{}/{}/{}", flow.account_id, flow.region, flow.name),
            count,
        )
    }

    /// Whether this shard exports `flow`.
    pub fn owns(&self, flow: &FlowInfo) -> bool {
        Shard::of(flow, self.count) == self.index
    }

    /// The shard of a whole target (an account and region) among `count`, when the
    /// shards of a run over several targets split the targets: of `<account>/<region>`.
    pub fn of_target(account: &str, region: &str, count: u32) -> u32 {
        bucket(&format!("{account}/{region}"), count)
    }

    /// Whether this shard exports the target `account`, `region`.
    pub fn owns_target(&self, account: &str, region: &str) -> bool {
        Shard::of_target(account, region, self.count) == self.index
    }

    /// More than one shard.
    pub fn is_split(&self) -> bool {
        self.count > 1
    }
}

/// The first 8 bytes of SHA-256 of `identity`, big-endian, mod `count`: documented in
/// README, the same on every machine and in every version.
fn bucket(identity: &str, count: u32) -> u32 {
    let digest = Sha256::digest(identity);
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) % u64::from(count.max(1))) as u32
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(name: &str) -> FlowInfo {
        appflow_model::testkit::flow_in(name, "210987654321", "eu-west-1")
    }

    #[test]
    fn parses_and_refuses_by_name() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1/0", "x/2", "1", "-1/2", ""] {
            let err = Shard::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn the_hash_is_the_documented_one() {
        // Computed with Python's hashlib from the formula in the module doc: a change
        // of the formula would move flows between shards of running deployments.
        let cases = [
            ("orders", 5, 3),
            ("flow-1", 5, 2),
            ("Acct_sync.v3@prod#3!", 1, 1),
            ("salesforce-to-s3-000", 4, 1),
        ];
        for (name, of_7, of_4) in cases {
            assert_eq!(
                (Shard::of(&flow(name), 7), Shard::of(&flow(name), 4)),
                (of_7, of_4),
                "{name}"
            );
        }
    }

    #[test]
    fn the_target_hash_is_the_documented_one() {
        // Python: int.from_bytes(sha256(b"<account>/<region>").digest()[:8], "big") % n
        let cases = [
            ("210987654321", "eu-west-1", 3, 0),
            ("012345678901", "us-east-1", 1, 1),
            ("999999999999", "ap-southeast-2", 0, 2),
        ];
        for (account, region, of_7, of_4) in cases {
            assert_eq!(
                (
                    Shard::of_target(account, region, 7),
                    Shard::of_target(account, region, 4)
                ),
                (of_7, of_4),
                "{account}/{region}"
            );
        }
    }

    #[test]
    fn every_flow_has_exactly_one_shard_and_they_spread() {
        let flows: Vec<_> = (0..400).map(|i| flow(&format!("flow-{i}"))).collect();
        let shards: Vec<_> = (0..4).map(|i| Shard { index: i, count: 4 }).collect();
        let mut sizes = [0; 4];
        for f in &flows {
            let owners: Vec<_> = shards.iter().filter(|s| s.owns(f)).collect();
            assert_eq!(owners.len(), 1);
            sizes[owners[0].index as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| n > 60), "{sizes:?}");
        assert!(flows.iter().all(|f| Shard::default().owns(f)));
    }
}
