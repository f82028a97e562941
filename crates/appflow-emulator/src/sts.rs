//! STS for the emulator's callers (`POST /`, AWS query protocol, for
//! `AWS_ENDPOINT_URL_STS`).

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::tenants::{Caller, key_of_account};

/// STS over the AWS query protocol: `GetCallerIdentity` (the caller's account) and
/// `AssumeRole` (credentials whose key names the role's account, as AWS's and moto's
/// do, so the role's calls are served by that account: for benchmarks and the demo
/// without moto; it trusts every caller).
pub(crate) async fn sts(caller: Caller, body: Bytes) -> Response {
    let param = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let action = param("Action").unwrap_or_default();
    let account = caller.account;
    caller
        .counted_by
        .lock()
        .counters
        .operations
        .entry(action.clone())
        .or_default()
        .calls += 1;
    let xml = |status: StatusCode, body: String| {
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/xml"));
        resp
    };
    let error = |code: &str, message: &str| {
        xml(
            StatusCode::BAD_REQUEST,
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
<Code>{code}</Code><Message>{message}</Message></Error>\
<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
            ),
        )
    };
    let result = match action.as_str() {
        "GetCallerIdentity" => format!(
            "<GetCallerIdentityResult><Arn>arn:aws:iam::{account}:user/appflow-export</Arn>\
<UserId>AIDAEMULATOR</UserId><Account>{account}</Account></GetCallerIdentityResult>"
        ),
        "AssumeRole" => {
            let role = param("RoleArn").unwrap_or_default();
            let Some(key) = role.split(':').nth(4).and_then(key_of_account) else {
                return error("ValidationError", &format!("{role} is not a role ARN"));
            };
            let expires =
                (chrono::Utc::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
            let assumed = role.replacen(":role/", ":assumed-role/", 1);
            format!(
                "<AssumeRoleResult><Credentials><AccessKeyId>{key}</AccessKeyId>\
<SecretAccessKey>emulator</SecretAccessKey><SessionToken>emulator</SessionToken>\
<Expiration>{expires}</Expiration></Credentials><AssumedRoleUser>\
<AssumedRoleId>AROAEMULATOR:appflow-export</AssumedRoleId><Arn>{assumed}/appflow-export</Arn>\
</AssumedRoleUser></AssumeRoleResult>"
            )
        }
        _ => {
            return error(
                "InvalidAction",
                "The emulator answers only GetCallerIdentity and AssumeRole",
            );
        }
    };
    xml(
        StatusCode::OK,
        format!(
            "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">{result}\
<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>\
</{action}Response>"
        ),
    )
}
