//! The targets of a run: each (account, region) to export and the role its AppFlow is
//! read through. From `--role-arn`s, from the organization (`--organization
//! --role-name`: every ACTIVE account Organizations lists), or the job's own account;
//! each in every `--region`. With several targets, `--shard i/N` splits the targets
//! (each whole to one shard), not their flows.

use std::collections::BTreeSet;

use anyhow::anyhow;
use appflow_aws::Service;
use appflow_extract::Shard;
use appflow_pipeline::Target;
use aws_config::SdkConfig;
use aws_sdk_organizations::types::{AccountState, AccountStatus};

use crate::cli::RunArgs;
use crate::{EXIT_FLOWS_FAILED, EXIT_USAGE, Failure};

/// The job's own identity, as STS names it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account: String,
    /// `aws`, `aws-cn`, `aws-us-gov`: the partition of the roles to assume.
    pub partition: String,
}

/// Asks STS who the job's own credentials are (needs no permission).
pub async fn caller(job: &SdkConfig) -> Result<Caller, Failure> {
    let out = aws_sdk_sts::Client::new(job)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            Failure::new(
                EXIT_FLOWS_FAILED,
                anyhow!(
                    "cannot tell the job's own account: {}",
                    appflow_aws::explain(Service::Sts, "sts:GetCallerIdentity", &e)
                ),
            )
        })?;
    let account = out.account().unwrap_or_default().to_string();
    let partition = out
        .arn()
        .and_then(|arn| arn.split(':').nth(1))
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
        .to_string();
    Ok(Caller { account, partition })
}

/// The account of a role ARN (`arn:aws:iam::111122223333:role/NAME`).
pub fn account_of_role(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then(|| account.to_string())
}

/// Every ACTIVE account of the organization (ListAccounts, every page).
async fn organization_accounts(job: &SdkConfig) -> Result<Vec<String>, Failure> {
    let client = aws_sdk_organizations::Client::new(job);
    let mut pages = client.list_accounts().into_paginator().send();
    let mut accounts = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            Failure::new(
                EXIT_FLOWS_FAILED,
                anyhow!(
                    "cannot list the organization's accounts (run the job in the management account or a delegated administrator of Organizations): {}",
                    appflow_aws::explain(Service::Organizations, "organizations:ListAccounts", &e)
                ),
            )
        })?;
        for account in page.accounts() {
            // `State` replaces the older `Status`; either says whether it is active.
            let active = match (account.state(), account.status()) {
                (Some(state), _) => *state == AccountState::Active,
                (None, Some(status)) => *status == AccountStatus::Active,
                (None, None) => false,
            };
            match account.id() {
                Some(id) if active => accounts.push(id.to_string()),
                Some(id) => tracing::info!(
                    account = id,
                    state = ?account.state().map(AccountState::as_str),
                    "organization account not ACTIVE: not exported"
                ),
                None => {}
            }
        }
    }
    Ok(accounts)
}

/// What a run is to export.
pub struct Planned {
    /// Each (account, region) once.
    pub targets: Vec<Target>,
    /// Targets asked for that cannot be exported (an `--accounts` id the organization
    /// does not list as ACTIVE): each fails, the others are still exported.
    pub problems: Vec<Problem>,
}

pub struct Problem {
    pub target: Target,
    pub why: String,
}

/// Each value once, in its first place.
fn once(values: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

/// The targets `args` name, each once, in every region of `regions`.
pub async fn plan(args: &RunArgs, job: &SdkConfig, regions: &[String]) -> Result<Planned, Failure> {
    let regions = once(regions);
    let mut problems = Vec::new();
    let accounts: Vec<(Option<String>, Option<String>)> = if args.organization {
        let name = args.role_name.as_deref().unwrap_or_default();
        let me = caller(job).await?;
        let mut listed = organization_accounts(job).await?;
        let keep: BTreeSet<&String> = args.accounts.iter().collect();
        let drop: BTreeSet<&String> = args.exclude_accounts.iter().collect();
        let known: BTreeSet<String> = listed.iter().cloned().collect();
        for missing in keep.iter().filter(|a| !known.contains(**a)) {
            // Asked for by name: saying nothing would hide an account never exported.
            problems.push(Problem {
                target: Target {
                    account: Some((*missing).clone()),
                    ..Target::default()
                },
                why: format!(
                    "--accounts names {missing}, which is not an ACTIVE account of the organization: not exported"
                ),
            });
        }
        for unknown in drop.iter().filter(|a| !known.contains(**a)) {
            tracing::warn!(account = %unknown, "--exclude-accounts names an account that is not an ACTIVE account of the organization");
        }
        listed.retain(|a| (keep.is_empty() || keep.contains(a)) && !drop.contains(a));
        listed.sort();
        tracing::info!(accounts = listed.len(), "organization accounts to export");
        listed
            .into_iter()
            .map(|account| {
                let role = (account != me.account)
                    .then(|| format!("arn:{}:iam::{account}:role/{name}", me.partition));
                (Some(account), role)
            })
            .collect()
    } else if args.role_arn.is_empty() {
        vec![(None, None)]
    } else {
        once(&args.role_arn)
            .into_iter()
            .map(|arn| (account_of_role(&arn), Some(arn)))
            .collect()
    };
    // One role per account: two roles of one account would export it twice.
    let mut seen = BTreeSet::new();
    let accounts: Vec<_> = accounts
        .into_iter()
        .filter(|(account, role)| {
            let first = seen.insert(account.clone());
            if !first {
                tracing::warn!(
                    account = account.as_deref().unwrap_or("the job's own"),
                    role = role.as_deref().unwrap_or("-"),
                    "a second role of one account is not used: the account is exported once"
                );
            }
            first
        })
        .collect();
    let regions = &regions;
    let targets = accounts
        .iter()
        .flat_map(|(account, role)| {
            regions.iter().map(move |region| Target {
                account: account.clone(),
                region: Some(region.clone()),
                role_arn: role.clone(),
            })
        })
        .collect();
    Ok(Planned { targets, problems })
}

/// The targets this shard owns: with several targets every target goes whole to one
/// shard (`Shard::of_target`); the job's own account is asked of STS for that. One
/// target keeps `shard` for its flows (returned: the shard each run splits flows by).
pub async fn shard(
    targets: Vec<Target>,
    shard: Shard,
    job: &SdkConfig,
) -> Result<(Vec<Target>, Shard), Failure> {
    if targets.len() <= 1 || !shard.is_split() {
        return Ok((targets, shard));
    }
    let mut own: Option<String> = None;
    let mut kept = Vec::new();
    for mut target in targets {
        let account = match &target.account {
            Some(a) => a.clone(),
            None => {
                if own.is_none() {
                    own = Some(caller(job).await?.account);
                }
                own.clone().unwrap_or_default()
            }
        };
        let region = target.region.clone().unwrap_or_default();
        if shard.owns_target(&account, &region) {
            target.account = Some(account);
            kept.push(target);
        }
    }
    Ok((kept, Shard::default()))
}

/// Checks what needs no AWS call: role ARNs, and that the filters have an
/// organization to filter.
pub fn validate(args: &RunArgs) -> Result<(), Failure> {
    let usage = |e: anyhow::Error| Failure::new(EXIT_USAGE, e);
    let mut roles = args.role_arn.iter().chain(args.dest_role_arn.iter());
    if let Some(bad) = roles.find(|r| !r.starts_with("arn:")) {
        return Err(usage(anyhow!(
            "'{bad}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )));
    }
    if let Some(name) = &args.role_name
        && (name.is_empty() || name.contains(':'))
    {
        return Err(usage(anyhow!(
            "--role-name '{name}' is not a role name (the NAME of arn:aws:iam::ACCOUNT:role/NAME)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_of_a_role_arn() {
        assert_eq!(
            account_of_role("arn:aws:iam::012345678901:role/reader").as_deref(),
            Some("012345678901")
        );
        assert_eq!(
            account_of_role("arn:aws-cn:iam::210987654321:role/a/b").as_deref(),
            Some("210987654321")
        );
        assert_eq!(account_of_role("arn:aws:iam::12:role/x"), None);
        assert_eq!(account_of_role("reader"), None);
    }
}
