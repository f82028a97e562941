//! Several accounts and regions behind one endpoint, as AWS runs one AppFlow per
//! account and region while `AWS_ENDPOINT_URL_APPFLOW` sends every request to one URL.
//!
//! A request is served by the tenant its SigV4 credential names: the region of its
//! credential scope (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`) and the account
//! its access key id encodes. AWS encodes the account in every key id it issues
//! (`sts:GetAccessKeyInfo` answers it; AWS does not document the encoding): characters
//! 5 to 12 are base32 of `account / 2 + 2^39`, and the 13th is from the upper half of
//! the alphabet when the account is odd. moto issues its keys (AssumeRole's among them)
//! the same way, so a role moto lets the job assume reads the emulator's flows of the
//! role's account. A key that encodes no account (`testing`) is the first account's.
//!
//! With one tenant every request is served by it, whatever its credential (the
//! emulator's single-account use). With several, a request for an account or region the
//! emulator does not serve is refused as AWS refuses a key it does not know.
//! The admin API picks a tenant with `?account=A&region=R` (default: the first).

// Extractors answer AWS errors early as axum `Response`s, as the handlers do.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::generate::GenConfig;
use crate::state::Emulator;

/// Every (account, region) the emulator serves, each an [`Emulator`] of its own.
#[derive(Clone)]
pub struct Tenants {
    inner: Arc<BTreeMap<(String, String), Emulator>>,
    first: (String, String),
}

impl Tenants {
    /// One tenant: `emulator`, serving every request.
    pub fn single(emulator: Emulator, account: &str, region: &str) -> Self {
        let key = (account.to_string(), region.to_string());
        Tenants {
            inner: Arc::new(BTreeMap::from([(key.clone(), emulator)])),
            first: key,
        }
    }

    /// A history for each of `accounts` x `regions`, generated from `cfg` with the
    /// tenant's account and region in its ARNs. The first tenant (first account, first
    /// region) gets `cfg.seed`, so one account and region is the single emulator's
    /// history; the n-th gets `cfg.seed + n`.
    pub fn generate(cfg: &GenConfig, accounts: &[String], regions: &[String]) -> Self {
        let mut map = BTreeMap::new();
        let mut first = None;
        let pairs = accounts
            .iter()
            .flat_map(|a| regions.iter().map(move |r| (a.clone(), r.clone())));
        for (n, (account, region)) in pairs.enumerate() {
            let tenant = GenConfig {
                seed: cfg.seed.wrapping_add(n as u64),
                account: account.clone(),
                region: region.clone(),
                ..cfg.clone()
            };
            first.get_or_insert_with(|| (account.clone(), region.clone()));
            map.insert((account, region), Emulator::generate(&tenant));
        }
        let first = first.unwrap_or_else(|| (cfg.account.clone(), cfg.region.clone()));
        if map.is_empty() {
            map.insert(first.clone(), Emulator::generate(cfg));
        }
        Tenants {
            inner: Arc::new(map),
            first,
        }
    }

    /// Every tenant, by (account, region).
    pub fn iter(&self) -> impl Iterator<Item = (&(String, String), &Emulator)> {
        self.inner.iter()
    }

    /// The tenant of `account` and `region`.
    pub fn get(&self, account: &str, region: &str) -> Option<&Emulator> {
        self.inner.get(&(account.to_string(), region.to_string()))
    }

    /// The first tenant (the admin API's default).
    pub fn first(&self) -> &Emulator {
        &self.inner[&self.first]
    }

    /// The tenant serving an AWS request signed with `credential`.
    fn serving(&self, credential: Option<Credential>) -> Result<&Emulator, Response> {
        if self.inner.len() == 1 {
            return Ok(self.first());
        }
        let Some(Credential { key, region }) = credential else {
            return Err(refused("the request is not signed (no SigV4 credential)"));
        };
        let account = account_of_key(&key).unwrap_or_else(|| self.first.0.clone());
        self.get(&account, &region).ok_or_else(|| {
            refused(&format!(
                "appflow-emulator serves no account {account} in region {region} (key {key})"
            ))
        })
    }

    /// The account a caller's credential belongs to (STS `GetCallerIdentity`).
    fn account_of(&self, credential: Option<&Credential>) -> String {
        credential
            .and_then(|c| account_of_key(&c.key))
            .filter(|_| self.inner.len() > 1)
            .unwrap_or_else(|| self.first.0.clone())
    }
}

/// What a SigV4 `Authorization` header says of its caller.
struct Credential {
    key: String,
    region: String,
}

fn credential(parts: &Parts) -> Option<Credential> {
    let auth = parts.headers.get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?;
    let scope = scope.split([',', ' ']).next()?;
    let mut fields = scope.split('/');
    let key = fields.next()?.to_string();
    let _date = fields.next()?;
    let region = fields.next()?.to_string();
    Some(Credential { key, region })
}

/// The account an AWS access key id encodes (see the module's doc); `None` for a key
/// that does not have the form (`AKIA`/`ASIA` and at least 16 base32 characters).
pub fn account_of_key(key: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const OFFSET: u64 = 1 << 39;
    let bytes = key.as_bytes();
    if bytes.len() < 16 || !(key.starts_with("AKIA") || key.starts_with("ASIA")) {
        return None;
    }
    let digit = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|p| p as u64);
    let mut half = 0u64;
    for &c in &bytes[4..12] {
        half = half * 32 + digit(c)?;
    }
    let odd = digit(bytes[12])? >= 16;
    let account = half.checked_sub(OFFSET)? * 2 + u64::from(odd);
    (account <= 999_999_999_999).then(|| format!("{account:012}"))
}

/// An access key id (`ASIA...`, 20 characters) that encodes `account`, as AWS and moto
/// make them; `None` for an account id that is not 12 digits.
pub fn key_of_account(account: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = account.parse().ok()?;
    let half = n / 2 + (1 << 39);
    let mut key = String::from("ASIA");
    for i in (0..8).rev() {
        key.push(char::from(ALPHABET[((half >> (5 * i)) & 31) as usize]));
    }
    // The 13th character's half of the alphabet says whether the account is odd; the
    // rest only has to look like a key.
    key.push(char::from(ALPHABET[if n % 2 == 1 { 16 } else { 0 }]));
    key.push_str("EMULATORKEY");
    Some(key)
}

fn refused(message: &str) -> Response {
    let mut resp = (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "message": format!("The security token included in the request is invalid. ({message})")
        })),
    )
        .into_response();
    resp.headers_mut().insert(
        "x-amzn-ErrorType",
        axum::http::HeaderValue::from_static("UnrecognizedClientException"),
    );
    resp
}

/// The tenant an AppFlow request is for (by its credential).
pub(crate) struct Tenant(pub Emulator);

impl FromRequestParts<Tenants> for Tenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, tenants: &Tenants) -> Result<Self, Response> {
        tenants.serving(credential(parts)).cloned().map(Tenant)
    }
}

/// The account of an STS caller, and the tenant counting its call.
pub(crate) struct Caller {
    pub account: String,
    pub counted_by: Emulator,
}

impl FromRequestParts<Tenants> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, tenants: &Tenants) -> Result<Self, Response> {
        let credential = credential(parts);
        let account = tenants.account_of(credential.as_ref());
        let counted_by = tenants
            .iter()
            .find(|((a, _), _)| *a == account)
            .map_or_else(|| tenants.first().clone(), |(_, e)| e.clone());
        Ok(Caller {
            account,
            counted_by,
        })
    }
}

/// The tenant an admin request names (`?account=A&region=R`, each defaulting to the
/// first tenant's).
pub(crate) struct Admin(pub Emulator);

impl FromRequestParts<Tenants> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, tenants: &Tenants) -> Result<Self, Response> {
        let (mut account, mut region) = tenants.first.clone();
        for pair in parts.uri.query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("account", v)) => account = v.to_string(),
                Some(("region", v)) => region = v.to_string(),
                _ => {}
            }
        }
        tenants
            .get(&account, &region)
            .cloned()
            .map(Admin)
            .ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("appflow-emulator serves no account {account} in region {region}"),
                )
                    .into_response()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_account_from_keys_made_as_aws_and_moto_make_them() {
        // Made by moto 5.2.5's generate_access_key_id_from_account_id (its STS AssumeRole
        // credentials), for an even and an odd account and one starting with 0.
        let cases = [
            ("ASIAQAAAAAAAPMKB7E7D", "000000000000"),
            ("ASIARZPUZDIKAMPLTFNQ", "123456789012"),
            ("ASIARZPUZDIK5DTSAABX", "123456789013"),
            ("ASIARBOK6TSGRVO3WELP", "071829462157"),
            ("ASIA6RVFFB772JBIUIIA", "999999999999"),
        ];
        for (key, account) in cases {
            assert_eq!(account_of_key(key).as_deref(), Some(account), "{key}");
        }
        for key in [
            "testing",
            "AKIA",
            "AKIA1111111111111111",
            "XXXXQAAAAAAAHOBKFDYU",
        ] {
            assert_eq!(account_of_key(key), None, "{key}");
        }
    }
}
