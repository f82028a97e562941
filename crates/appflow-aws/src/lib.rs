//! What an AWS SDK error means, in one line a person can act on: the cause and the
//! fix (which setting, which IAM action). The SDK's whole story (its error chain and
//! debug structures, about 2 KB) goes to the debug log only. Used by extract (AppFlow)
//! and load (S3) alike: the SDK crates share these error types. Also [`CallGate`],
//! through which every AppFlow call of an account and region goes: a limit of calls in
//! flight that adapts to AWS's throttling ([`limit`]), and the count of attempts.

mod gate;
pub mod limit;

pub use gate::{CallGate, Calls, Slot, is_throttling};

use std::error::Error as StdError;
use std::fmt::Debug;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The HTTP client the SDK builds by default (hyper 1 with rustls on aws-lc, proxies
/// from `HTTPS_PROXY`/`NO_PROXY`), for a client that wraps it ([`CallGate::http_client`]):
/// a wrapper replaces the client the SDK would otherwise make itself, so it makes the
/// same one.
pub fn default_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The service a call went to, for the settings a message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    AppFlow,
    S3,
    Sts,
    Organizations,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::AppFlow => "AppFlow",
            Service::S3 => "S3",
            Service::Sts => "STS",
            Service::Organizations => "Organizations",
        }
    }

    fn endpoint_settings(self) -> &'static str {
        match self {
            Service::AppFlow => "--appflow-endpoint or AWS_ENDPOINT_URL_APPFLOW",
            Service::S3 => "--s3-endpoint or AWS_ENDPOINT_URL_S3",
            Service::Sts => "AWS_ENDPOINT_URL_STS",
            Service::Organizations => "AWS_ENDPOINT_URL_ORGANIZATIONS",
        }
    }
}

const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IAM role (ECS task role, instance profile)";

/// One line saying why `action` (an IAM action, `appflow:ListFlows`) on `service`
/// failed and what to change; the SDK's details are logged at debug level.
pub fn explain<E, R>(service: Service, action: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: Debug,
{
    let details = DisplayErrorContext(err).to_string();
    tracing::debug!(service = service.name(), action, details = %details, "AWS SDK error");
    let svc = service.name();
    if let Some(refused) = assume_role_refused(StdError::source(err)) {
        return refused;
    }
    let credentials_missing = details.contains("CredentialsNotLoaded")
        || details.contains("no credentials")
        || details.contains("the credential provider was not enabled");
    match err {
        _ if credentials_missing => NO_CREDENTIALS.to_string(),
        SdkError::ConstructionFailure(_) => format!(
            "the {svc} request for {action} could not be built: check the region (--region or AWS_REGION) and {}",
            service.endpoint_settings()
        ),
        SdkError::TimeoutError(_) => format!(
            "{svc} did not answer {action} in time: check the network, the region and {}",
            service.endpoint_settings()
        ),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => format!(
            "{svc} did not answer {action} in time: check the network, the region and {}",
            service.endpoint_settings()
        ),
        SdkError::DispatchFailure(failure) if failure.is_io() => format!(
            "cannot connect to {svc} for {action} ({}): check the network, the region and {}",
            root_cause(err),
            service.endpoint_settings()
        ),
        SdkError::ServiceError(_) => match err.code() {
            Some("AccessDenied" | "AccessDeniedException") => {
                let said = err
                    .message()
                    .map(|m| format!(" ({svc} said: {})", truncated(m, 200)))
                    .unwrap_or_default();
                let kms = if service == Service::S3 {
                    " (with SSE-KMS, kms:GenerateDataKey and kms:Decrypt on the key too)"
                } else {
                    ""
                };
                format!(
                    "access denied: the credentials in use may not call {action}, or a policy refuses it{kms}{said}"
                )
            }
            Some(
                code @ ("UnrecognizedClientException"
                | "InvalidClientTokenId"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidSignatureException"
                | "ExpiredToken"
                | "ExpiredTokenException"),
            ) => format!(
                "{svc} refused the credentials ({code}) for {action}: check or refresh them"
            ),
            Some(code) => match err.message() {
                Some(message) => format!("{svc} answered {action} with {code}: {message}"),
                None => format!("{svc} answered {action} with {code}"),
            },
            None => format!("{svc} answered {action} with an error: {}", root_cause(err)),
        },
        _ => format!("{action} failed: {}", root_cause(err)),
    }
}

/// The credentials of an assumed role (`--role-arn`, `--organization`,
/// `--dest-role-arn`) are fetched when the first call needs them: STS refusing the
/// AssumeRole then fails that call. Says so, with what STS said.
fn assume_role_refused(source: Option<&(dyn StdError + 'static)>) -> Option<String> {
    type AssumeRoleFailure = SdkError<
        aws_sdk_sts::operation::assume_role::AssumeRoleError,
        aws_smithy_runtime_api::http::Response,
    >;
    let mut cause = source;
    while let Some(e) = cause {
        if let Some(sts) = e.downcast_ref::<AssumeRoleFailure>() {
            let code = sts.code().unwrap_or("an error");
            let said = sts
                .message()
                .map(|m| format!(": {}", truncated(m, 300)))
                .unwrap_or_else(|| format!(": {}", root_cause(sts)));
            return Some(format!(
                "STS refused sts:AssumeRole ({code}{said}); check that the role exists, that its trust policy trusts the job's own role, and the external id (--external-id) it asks for"
            ));
        }
        cause = e.source();
    }
    None
}

/// At most `max` characters of `text`.
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// The innermost cause's message (`Connection refused (os error 111)`), without the
/// SDK's debug structures.
fn root_cause(err: &dyn StdError) -> String {
    let mut cause: &dyn StdError = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
