//! Upstream mode: the reference server as a token-mediating backend in front of an OpenID
//! Provider (draft-ietf-oauth-browser-based-apps §6.2). The server is a confidential client: it
//! runs the authorization code flow with PKCE, keeps the provider's refresh token (sealed, in
//! the store) and hands the provider's short-lived access token to the browser.
//!
//! Discovery, PKCE, the code and refresh grants, ID-token and JWT access-token validation
//! (JWKS signature, `iss`, `aud`, `exp`, …) are the `openidconnect` crate's; revocation
//! (RFC 7009) and introspection (RFC 7662) are one form POST each with reqwest (so that the
//! provider's http test endpoint is allowed, and introspection's `cnf` is read). This module
//! adds the HTTP client (reqwest with a timeout on every call, status-aware errors), the
//! one-provider-call-per-family rule, forwarding the browser's DPoP proof to the provider's
//! token endpoint (RFC 9449 §5) and the mapping of provider failures to our answers:
//! unreachable or 5xx → 503, `invalid_grant` → 401 and the family ends, a refused DPoP proof →
//! a new proof asked of the browser, anything malformed → 502.
//!
//! Handlers are in [`crate::routes::upstream`]; configuration in [`config`]; JWT access
//! tokens and the JWKS cache in [`access`]; sealing in [`seal`]; storage behind
//! [`crate::store::UpstreamStore`].

pub mod access;
pub mod backchannel;
pub mod config;
pub mod revocation;
pub mod seal;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    CoreTokenResponse,
};
use openidconnect::{
    http, AdditionalProviderMetadata, AuthenticationFlow, AuthorizationCode, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, ErrorResponse,
    HttpRequest, HttpResponse, IntrospectionUrl, IssuerUrl, JsonWebKeySet, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl,
    RefreshToken, RequestTokenError, RevocationUrl, Scope, StandardErrorResponse,
    TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::store::UpstreamStore;
use access::{FetchJwks, Jwks, JwtError, ProviderClaims, Rules};
use config::UpstreamConfig;
use seal::SealKey;

/// Add one to an upstream counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Provider metadata fields that `CoreProviderMetadata` does not carry.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RFC 7009.
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// RFC 7662.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// OpenID Connect RP-Initiated Logout.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 9449 §5.1: the provider accepts DPoP proofs with these algorithms.
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type Oidc = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a call to the provider's HTTP endpoint failed before a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Connection refused, reset, DNS, TLS, or no answer within the timeout; why, for the
    /// log ([`crate::error::chain`] of the client's error, without the URL).
    Unreachable(String),
    /// The provider answered 5xx or 429, with its `Retry-After` when a 429 or a 503 had one.
    Status(u16, Option<revocation::RetryAfter>),
    /// The request could not be built (our bug).
    Build,
    /// The answer's body is longer than [`MAX_PROVIDER_BODY`].
    TooLarge,
}

/// How long a connection to the provider stays open idle for the next call: below the
/// shortest keep-alive timeout of common servers (Node's and Apache's 5 s). A connection
/// kept longer races the provider closing it: a refresh sent as the provider's close arrives
/// fails as unreachable (503), and a POST is not resent. Seen with oidc-provider (Node) and
/// refreshes about 5 s apart: under load, 3 of 7 runs of tests/oidc/dpop.test.mjs got a 503
/// with the default (90 s); 0 of 10 with this.
pub const PROVIDER_IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(4);

/// The longest provider answer read (discovery, JWKS, tokens, introspection are a few KB):
/// a hostile or broken provider cannot make the server hold an unbounded body.
pub const MAX_PROVIDER_BODY: usize = 1 << 20;

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Unreachable(why) if why.is_empty() => {
                f.write_str("provider unreachable or timed out")
            }
            HttpError::Unreachable(why) => write!(f, "provider unreachable or timed out: {why}"),
            HttpError::Status(s, _) => write!(f, "provider answered {s}"),
            HttpError::Build => f.write_str("request could not be built"),
            HttpError::TooLarge => f.write_str("provider answer over 1 MiB"),
        }
    }
}

impl std::error::Error for HttpError {}

/// What went wrong with the provider, as our handlers answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// Unreachable, timed out or 5xx: 503, try again.
    Unavailable,
    /// Unavailable (429 or 503), and the provider said when to ask again (`Retry-After`):
    /// the revocation queue waits that long ([`revocation::answer_of_status`]); a refresh
    /// passes it on to the browser.
    RetryAfter(revocation::RetryAfter),
    /// `invalid_grant`: the grant is gone; the family ends (401).
    InvalidGrant,
    /// Unparsable or unexpected answer, or an OAuth error other than `invalid_grant`: 502.
    Malformed(String),
    /// The ID token failed validation.
    BadIdToken(String),
    /// The family's token is to be bound to the browser's DPoP key and the request brought no
    /// proof for the provider's token endpoint (ask the browser for one).
    NeedDpopProof,
    /// The provider refused the forwarded DPoP proof: it wants a nonce (`use_dpop_nonce`) or
    /// found the proof invalid (`invalid_dpop_proof`). Ask the browser for a new proof.
    DpopProofRefused,
    /// The family ended (logout, reuse, the per-user cap; maybe on another instance) while
    /// the provider renewed its grant: the renewed grant was revoked and its access token is
    /// not handed out (401, as [`Self::InvalidGrant`]).
    FamilyEnded,
}

/// Sends one provider request with reqwest (timeouts set on the client; no redirects).
/// A 5xx or a 429 (RFC 6585: the provider rate-limits us) becomes [`HttpError::Status`], so
/// it is told apart from a malformed answer, with the `Retry-After` of a 429 or a 503.
async fn send(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let request = reqwest::Request::try_from(request).map_err(|_| HttpError::Build)?;
    let response = http.execute(request).await.map_err(unreachable)?;
    let status = response.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(revocation::RetryAfter::parse)
            // Defined on a 429 (RFC 6585 §4) and a 503 (RFC 9110 §15.6.4) only.
            .filter(|_| matches!(status.as_u16(), 429 | 503));
        return Err(HttpError::Status(status.as_u16(), retry_after));
    }
    let headers = response.headers().clone();
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > MAX_PROVIDER_BODY {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let mut builder = http::Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        builder = builder.header(name.as_str(), value.as_bytes());
    }
    builder.body(body).map_err(|_| HttpError::Build)
}

/// The provider could not be reached, or its answer not read: why, without the URL (the
/// caller's message names the provider).
fn unreachable(e: reqwest::Error) -> HttpError {
    HttpError::Unreachable(crate::error::chain(&e.without_url()))
}

fn classify<T: ErrorResponse + 'static>(
    e: RequestTokenError<HttpError, T>,
    code: impl Fn(&T) -> &str,
) -> ProviderError {
    match e {
        RequestTokenError::ServerResponse(r) if code(&r) == "invalid_grant" => {
            ProviderError::InvalidGrant
        }
        RequestTokenError::ServerResponse(r)
            if matches!(code(&r), "use_dpop_nonce" | "invalid_dpop_proof") =>
        {
            ProviderError::DpopProofRefused
        }
        // The error code is the provider's; its description may echo input, so it is not kept.
        RequestTokenError::ServerResponse(_) => {
            ProviderError::Malformed("provider refused the request".into())
        }
        RequestTokenError::Request(e @ (HttpError::Build | HttpError::TooLarge)) => {
            ProviderError::Malformed(e.to_string())
        }
        RequestTokenError::Request(HttpError::Status(_, Some(asked))) => {
            ProviderError::RetryAfter(asked)
        }
        RequestTokenError::Request(_) => ProviderError::Unavailable,
        RequestTokenError::Parse(_, _) => {
            ProviderError::Malformed("unparsable provider answer".into())
        }
        RequestTokenError::Other(_) => {
            ProviderError::Malformed("unexpected provider answer".into())
        }
    }
}

fn token_error_code(e: &StandardErrorResponse<CoreErrorResponseType>) -> &str {
    e.error().as_ref()
}

/// The SHA-256 of a provider access token: what the store keeps of the tokens handed out
/// ([`crate::store::UpstreamStore::note_access_token`]), never the token.
pub fn access_token_hash(token: &str) -> crate::tokens::TokenHash {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// What the server keeps of a family's grant (sealed at rest).
#[derive(Clone, Serialize, Deserialize)]
pub struct Grant {
    /// The provider's subject.
    pub sub: String,
    /// The provider's refresh token, if it gave one.
    pub refresh_token: Option<String>,
    /// The provider's current access token.
    pub access_token: String,
    /// When it expires (epoch ms, from `expires_in` at receipt).
    pub access_expires_at_ms: i64,
    /// Its whole lifetime in ms (to decide when it is worth renewing).
    pub access_lifetime_ms: i64,
    /// The validated ID token from the login (for `id_token_hint`).
    pub id_token: Option<String>,
    /// The DPoP key (thumbprint) whose proof was forwarded when this access token was
    /// obtained; a browser with another key does not get it.
    #[serde(default)]
    pub dpop_key: Option<String>,
    /// Whether the provider bound the access token to that key (`token_type: DPoP`).
    #[serde(default)]
    pub dpop_bound: bool,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("access_expires_at_ms", &self.access_expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// Whether a cached provider access token can be handed out again at `now_ms` to a browser
/// whose DPoP key is `key` (`None`: no DPoP): at least half of its lifetime and at least 2 s
/// left, and obtained for that same key. A client refreshes near the end of a token's life,
/// so a refresh that finds less than half left renews at the provider; a new tab in the
/// middle of a cycle gets the cached one. A token bound to another key (every tab closed, a
/// new key made) or unbound is renewed for the new key.
pub fn reusable(grant: &Grant, now_ms: i64, key: Option<&str>) -> bool {
    let left = grant.access_expires_at_ms - now_ms;
    left >= 2000 && left * 2 >= grant.access_lifetime_ms && grant.dpop_key.as_deref() == key
}

/// What a refresh brings for binding the provider's token to the browser's DPoP key.
#[derive(Clone)]
pub struct UpstreamDpop {
    /// Thumbprint of the key of the request's (valid) proof.
    pub jkt: String,
    /// A proof by that key for the provider's token endpoint (`DPoP-Upstream`), checked.
    pub proof: Option<String>,
}

impl std::fmt::Debug for UpstreamDpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamDpop")
            .field("with_proof", &self.proof.is_some())
            .finish_non_exhaustive()
    }
}

/// A login between `/auth/login` and `/auth/callback` (sealed at rest).
#[derive(Serialize, Deserialize)]
pub struct Pending {
    /// Hash (base64url) of the value of the browser-binding cookie.
    pub binding: String,
    /// PKCE verifier.
    pub verifier: String,
    /// Expected `nonce`.
    pub nonce: String,
    /// Allow-listed return URL.
    pub return_to: String,
    /// When it expires (epoch ms; 0 in rows stored before it was kept).
    #[serde(default)]
    pub expires_at_ms: i64,
}

/// Counters of calls to the provider (exposed in test mode at `/test/upstream/counters`).
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// Code exchanges.
    pub code_exchanges: AtomicU64,
    /// Refresh-token grants sent to the provider.
    pub provider_refreshes: AtomicU64,
    /// Of which failed.
    pub provider_refresh_failures: AtomicU64,
    /// Refreshes answered with the cached provider access token.
    pub cached_served: AtomicU64,
    /// Refreshes that waited for another one's provider call.
    pub lease_waits: AtomicU64,
    /// Revocations sent.
    pub revocations: AtomicU64,
    /// Introspections sent.
    pub introspections: AtomicU64,
    /// Access tokens checked as JWTs against the JWKS.
    pub jwt_checks: AtomicU64,
    /// Refresh-token grants sent with a forwarded DPoP proof.
    pub dpop_refreshes: AtomicU64,
    /// Refreshes answered `use_upstream_dpop` (a proof for the provider asked of the browser).
    pub dpop_challenges: AtomicU64,
    /// Back-channel Logout Tokens accepted.
    pub backchannel_logouts: AtomicU64,
    /// Back-channel logout requests refused (400: invalid or replayed).
    pub backchannel_refused: AtomicU64,
    /// Families ended by back-channel logouts.
    pub backchannel_ended: AtomicU64,
}

/// The provider client and what upstream mode keeps.
pub struct Upstream {
    /// Configuration.
    pub config: UpstreamConfig,
    oidc: Oidc,
    http: reqwest::Client,
    end_session: Option<Url>,
    revocation: Option<RevocationUrl>,
    introspection: Option<IntrospectionUrl>,
    issuer: IssuerUrl,
    id_token_algs: Vec<openidconnect::core::CoreJwsSigningAlgorithm>,
    token_endpoint: Option<Url>,
    /// The provider accepts ES256 DPoP proofs (its metadata says so).
    pub dpop: bool,
    /// The last `DPoP-Nonce` the provider gave (not a secret; handed to the browser).
    provider_nonce: std::sync::Mutex<Option<String>>,
    /// The provider's signing keys (ID tokens and JWT access tokens).
    pub jwks: Jwks,
    /// Seals grants and pending logins.
    pub key: SealKey,
    /// Pending logins, grants, leases.
    pub store: Arc<dyn UpstreamStore>,
    /// Provider-call counters.
    pub counters: UpstreamCounters,
    /// Test mode: the next callback expects a different nonce (to prove it is checked).
    pub tamper_next_nonce: std::sync::atomic::AtomicBool,
}

/// An introspection answer (RFC 7662 §2.2, `cnf` from RFC 9449 §6.2).
#[derive(Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    cnf: Option<access::Confirmation>,
}

/// Why a provider access token could not be checked (it was neither accepted nor refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The provider did not answer the introspection (503, try again).
    Unavailable,
    /// An opaque token and no introspection endpoint: this server cannot check it at all.
    NoIntrospection,
    /// The introspection answer was unusable.
    Malformed(String),
}

impl Upstream {
    /// Discover the provider and build the client. Fails when the provider cannot be reached
    /// or its metadata is unusable.
    pub async fn connect(
        config: UpstreamConfig,
        store: Arc<dyn UpstreamStore>,
        now_ms: i64,
    ) -> Result<Arc<Self>, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(PROVIDER_IDLE_CONNECTION)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|_| "the issuer is not a URL".to_string())?;
        let send_with = http.clone();
        let client = move |r: HttpRequest| send(send_with.clone(), r);
        let metadata = Metadata::discover_async(issuer.clone(), &client)
            .await
            .map_err(|e| {
                format!(
                    "OpenID Provider discovery at {} failed: {}",
                    config.issuer,
                    crate::error::chain(&e)
                )
            })?;
        let jwks_uri = metadata.jwks_uri().clone();
        let fetch_with = http.clone();
        let fetch: FetchJwks = Arc::new(move || {
            let (http, url) = (fetch_with.clone(), jwks_uri.clone());
            Box::pin(async move {
                let client = move |r: HttpRequest| send(http.clone(), r);
                JsonWebKeySet::fetch_async(&url, &client)
                    .await
                    .map_err(|e| crate::error::chain(&e))
            })
        });
        let jwks = Jwks::new(metadata.jwks().clone(), now_ms, fetch);
        let id_token_algs = id_token_algs(metadata.id_token_signing_alg_values_supported());
        if id_token_algs.is_empty() {
            return Err(format!(
                "the provider signs ID tokens with no algorithm this server verifies \
                 (id_token_signing_alg_values_supported: {:?}; asymmetric ones are verified)",
                metadata.id_token_signing_alg_values_supported()
            ));
        }
        let token_endpoint = metadata.token_endpoint().map(|u| u.url().clone());
        let extra = metadata.additional_metadata().clone();
        let parse = |u: Option<String>, what: &str| -> Result<Option<Url>, String> {
            u.map(|u| Url::parse(&u).map_err(|_| format!("provider {what} is not a URL")))
                .transpose()
        };
        let revocation = parse(extra.revocation_endpoint, "revocation_endpoint")?;
        let introspection = parse(extra.introspection_endpoint, "introspection_endpoint")?;
        let end_session = parse(extra.end_session_endpoint, "end_session_endpoint")?;
        let dpop = extra
            .dpop_signing_alg_values_supported
            .as_ref()
            .is_some_and(|algs| algs.iter().any(|a| a == crate::dpop::ALGS));
        let oidc = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(config.client_secret.0.clone())),
        )
        .set_redirect_uri(
            RedirectUrl::new(config.redirect_uri.to_string())
                .map_err(|_| "redirect URI is not a URL".to_string())?,
        );
        let revocation = revocation.map(RevocationUrl::from_url);
        let introspection = introspection.map(IntrospectionUrl::from_url);
        let key = match &config.token_key {
            Some(k) => SealKey::from_base64(&k.0)?,
            None => {
                tracing::warn!("no TW_OIDC_TOKEN_KEY: provider tokens are sealed with a random key and do not survive a restart");
                SealKey::generate()
            }
        };
        tracing::info!(issuer = %config.issuer, client_id = %config.client_id, audience = %config.audience, "upstream mode: OpenID Provider discovered");
        if introspection.is_none() {
            tracing::warn!("the provider offers no introspection endpoint: /api/me accepts its JWT access tokens only (opaque ones are answered 501)");
        }
        Ok(Arc::new(Self {
            config,
            oidc,
            http,
            end_session,
            revocation,
            introspection,
            issuer,
            id_token_algs,
            token_endpoint,
            dpop,
            provider_nonce: Default::default(),
            jwks,
            key,
            store,
            counters: UpstreamCounters::default(),
            tamper_next_nonce: Default::default(),
        }))
    }

    /// The ID-token verifier of the client over the cached keys ([`id_token_verifier`]).
    fn id_token_verifier(
        &self,
        issued: IssueWindow,
    ) -> openidconnect::IdTokenVerifier<'static, CoreJsonWebKey> {
        id_token_verifier(
            &self.config.client_id,
            &self.config.client_secret.0,
            self.issuer.clone(),
            self.jwks.keys(),
            self.id_token_algs.clone(),
            issued,
        )
    }

    fn client(
        &self,
    ) -> impl Fn(
        HttpRequest,
    )
        -> std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>
           + '_ {
        move |r| Box::pin(send(self.http.clone(), r))
    }

    /// The authorization URL for a new login, with its `state`, PKCE verifier and nonce.
    pub fn authorize(&self) -> (Url, CsrfToken, PkceCodeVerifier, Nonce) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .oidc
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        (url, state, verifier, nonce)
    }

    /// Exchange `code` (with the PKCE verifier) and validate the ID token against `nonce`,
    /// its `iat` against `issued` ([`IssueWindow`]).
    pub async fn exchange(
        &self,
        code: String,
        verifier: String,
        nonce: &str,
        now_ms: i64,
        issued: IssueWindow,
    ) -> Result<Grant, ProviderError> {
        let began = std::time::Instant::now();
        bump(&self.counters.code_exchanges);
        let client = self.client();
        let response: CoreTokenResponse = self
            .oidc
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| ProviderError::Malformed("no token endpoint".into()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&client)
            .await
            .map_err(|e| classify(e, token_error_code))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| ProviderError::BadIdToken("no ID token".into()))?;
        // The keys of the cache (fetched again when old, so a withdrawn key is dropped): a
        // provider that rotated its keys since discovery is followed. This token comes from
        // the provider's token endpoint, not from a client: a key we do not have fetches the
        // keys at once, however recently they were fetched.
        let nonce = Nonce::new(nonce.to_string());
        let seen = self.jwks.generation();
        self.jwks.refresh_if_old(now_ms).await;
        let mut verifier = self.id_token_verifier(issued.at_check(began));
        let unknown_key = |e: &openidconnect::ClaimsVerificationError| {
            matches!(
                e,
                openidconnect::ClaimsVerificationError::SignatureVerification(
                    openidconnect::SignatureVerificationError::NoMatchingKey
                )
            )
        };
        if id_token
            .claims(&verifier, &nonce)
            .is_err_and(|e| unknown_key(&e))
            && self.jwks.refetch_for_provider_token(seen, now_ms).await
        {
            verifier = self.id_token_verifier(issued.at_check(began));
        }
        let claims = id_token
            .claims(&verifier, &nonce)
            .map_err(|e| ProviderError::BadIdToken(e.to_string()))?;
        let audiences: Vec<&str> = claims.audiences().iter().map(|a| a.as_str()).collect();
        let azp = claims.authorized_party().map(|p| p.as_str());
        azp_allowed(&self.config.client_id, &audiences, azp).map_err(ProviderError::BadIdToken)?;
        let sub = claims.subject().as_str().to_string();
        let id_token = id_token.to_string();
        Ok(grant_from(&response, sub, None, Some(id_token), now_ms))
    }

    /// Renew the access token with the grant's refresh token (keeping the old refresh token
    /// when the provider does not rotate it). With `dpop`, its proof goes to the provider as
    /// the `DPoP` header (RFC 9449 §5): the provider binds the new access token to the
    /// browser's key. (Our refresh token is bound to our client authentication, not to the
    /// key: the backend is a confidential client, §5.)
    pub async fn refresh(
        &self,
        grant: &Grant,
        now_ms: i64,
        dpop: Option<&UpstreamDpop>,
    ) -> Result<Grant, ProviderError> {
        let Some(rt) = grant.refresh_token.clone() else {
            return Err(ProviderError::InvalidGrant);
        };
        bump(&self.counters.provider_refreshes);
        let proof = dpop.and_then(|d| d.proof.clone());
        if proof.is_some() {
            bump(&self.counters.dpop_refreshes);
        }
        let rt = RefreshToken::new(rt);
        let nonce_seen = Arc::new(std::sync::Mutex::new(None::<String>));
        let (http_client, seen) = (self.http.clone(), nonce_seen.clone());
        let client = move |mut r: HttpRequest| {
            let (http_client, seen, proof) = (http_client.clone(), seen.clone(), proof.clone());
            async move {
                if let Some(v) = proof.and_then(|p| http::HeaderValue::from_str(&p).ok()) {
                    r.headers_mut().insert(crate::dpop::PROOF_HEADER, v);
                }
                let response = send(http_client, r).await?;
                let nonce = response.headers().get(crate::dpop::NONCE_HEADER);
                if let Some(n) = nonce.and_then(|v| v.to_str().ok()) {
                    *seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(n.to_string());
                }
                Ok::<_, HttpError>(response)
            }
        };
        let result = match self.oidc.exchange_refresh_token(&rt) {
            Ok(request) => request
                .request_async(&client)
                .await
                .map_err(|e| classify(e, token_error_code)),
            Err(_) => Err(ProviderError::Malformed("no token endpoint".into())),
        };
        let seen = nonce_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if seen.is_some() {
            *self
                .provider_nonce
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = seen;
        }
        if result.is_err() {
            bump(&self.counters.provider_refresh_failures);
        }
        let response = result?;
        let mut renewed = grant_from(
            &response,
            grant.sub.clone(),
            grant.refresh_token.clone(),
            grant.id_token.clone(),
            now_ms,
        );
        if let Some(d) = dpop.filter(|d| d.proof.is_some()) {
            renewed.dpop_key = Some(d.jkt.clone());
            renewed.dpop_bound = response.token_type().as_ref().eq_ignore_ascii_case("dpop");
            if !renewed.dpop_bound {
                tracing::warn!("the provider took a DPoP proof but issued a Bearer token");
            }
        }
        Ok(renewed)
    }

    /// The provider's token endpoint (the `htu` of the proofs forwarded to it).
    pub fn token_endpoint(&self) -> Option<&Url> {
        self.token_endpoint.as_ref()
    }

    /// The provider's last `DPoP-Nonce`, if it gave one.
    pub fn provider_nonce(&self) -> Option<String> {
        self.provider_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Check a `DPoP-Upstream` proof before it is forwarded ([`check_upstream_proof`]).
    pub fn check_upstream_proof(
        &self,
        proof: &str,
        jkt: &str,
        now_ms: i64,
        max_age_s: i64,
        leeway_s: i64,
    ) -> Result<(), crate::dpop::ProofError> {
        let endpoint = self
            .token_endpoint
            .as_ref()
            .ok_or(crate::dpop::ProofError::Uri)?;
        check_upstream_proof(proof, jkt, endpoint, now_ms, max_age_s, leeway_s)
    }

    /// Revoke the grant's refresh token at the provider (RFC 7009), when it offers revocation.
    /// `Ok(false)` when there is nothing to revoke or no endpoint.
    pub async fn revoke(&self, grant: &Grant) -> Result<bool, ProviderError> {
        let Some(rt) = grant.refresh_token.clone() else {
            return Ok(false);
        };
        let Some(url) = self.revocation.clone() else {
            return Ok(false);
        };
        bump(&self.counters.revocations);
        // RFC 7009 §2.1 is one form POST with the client's credentials. `oauth2` refuses a
        // revocation endpoint that is not https, so it is sent here with reqwest directly (the
        // test provider runs on http://127.0.0.1).
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(url.url().clone())
            .basic_auth(
                enc(&self.config.client_id),
                Some(enc(&self.config.client_secret.0)),
            )
            .form(&[("token", rt.as_str()), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .map_err(|_| ProviderError::Unavailable)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(revocation::RetryAfter::parse);
        if let Some(answer) = revocation::answer_of_status(status, retry_after) {
            return answer;
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        revocation::answer_of_refusal(status, body.get("error").and_then(|e| e.as_str()))
    }

    /// Check a provider access token: a JWT against the provider's JWKS ([`access`]), an
    /// opaque one by introspection. `Ok(None)`: refused (the reason is logged at debug).
    pub async fn check_access_token(
        &self,
        token: &str,
        now_ms: i64,
        leeway_s: i64,
    ) -> Result<Option<ProviderClaims>, CheckError> {
        if !access::looks_like_jwt(token) {
            return self.introspect(token).await;
        }
        bump(&self.counters.jwt_checks);
        let rules = Rules {
            issuer: self.issuer.clone(),
            audience: self.config.audience.clone(),
            now_ms,
            leeway_s,
        };
        match self.jwks.verify(token, &rules).await {
            Ok(claims) => Ok(Some(claims)),
            Err(JwtError::Invalid(detail)) => {
                tracing::debug!(%detail, "provider access token refused");
                Ok(None)
            }
            Err(e) => {
                tracing::debug!(detail = ?e, "provider access token refused");
                Ok(None)
            }
        }
    }

    /// Check a Logout Token the provider POSTed ([`backchannel`]) against its JWKS.
    pub async fn verify_logout_token(
        &self,
        token: &str,
        now_ms: i64,
        leeway_s: i64,
    ) -> Result<backchannel::LogoutClaims, JwtError> {
        let rules = backchannel::LogoutRules {
            issuer: self.issuer.as_str(),
            client_id: &self.config.client_id,
            now_ms,
            leeway_s,
            algs: &self.id_token_algs,
        };
        self.jwks
            .check(now_ms, |keys| {
                backchannel::verify_logout_token(keys, token, &rules)
            })
            .await
    }

    /// Check a provider access token by introspection (RFC 7662). `Ok(None)` = not active, or
    /// issued to another client. Sent with reqwest directly (one form POST with the client's
    /// credentials, like revocation) so that `cnf.jkt` (RFC 9449 §6.2) is read: a bound
    /// opaque token is then accepted only with a proof by its key.
    pub async fn introspect(&self, token: &str) -> Result<Option<ProviderClaims>, CheckError> {
        let Some(url) = self.introspection.clone() else {
            return Err(CheckError::NoIntrospection);
        };
        bump(&self.counters.introspections);
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(url.url().clone())
            .basic_auth(
                enc(&self.config.client_id),
                Some(enc(&self.config.client_secret.0)),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|_| CheckError::Unavailable)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(CheckError::Unavailable);
        }
        if !status.is_success() {
            return Err(CheckError::Malformed(format!(
                "introspection answered {}",
                status.as_u16()
            )));
        }
        let r: Introspection = response
            .json()
            .await
            .map_err(|_| CheckError::Malformed("unparsable introspection answer".into()))?;
        let ours = r
            .client_id
            .as_deref()
            .is_none_or(|c| c == self.config.client_id);
        if !r.active || !ours {
            return Ok(None);
        }
        Ok(Some(ProviderClaims {
            sub: r.sub,
            scope: r.scope,
            exp: r.exp.map(|e| e as i64),
            iss: self.config.issuer.clone(),
            aud: Vec::new(),
            client_id: r.client_id,
            jkt: r.cnf.and_then(|c| c.jkt),
            checked_by: "introspection",
        }))
    }

    /// The RP-initiated logout URL for a grant, when the provider has an end-session endpoint.
    pub fn end_session_url(&self, grant: Option<&Grant>) -> Option<Url> {
        let mut url = self.end_session.clone()?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.config.client_id);
            if let Some(id_token) = grant.and_then(|g| g.id_token.as_deref()) {
                q.append_pair("id_token_hint", id_token);
            }
            if let Some(post) = &self.config.post_logout_uri {
                q.append_pair("post_logout_redirect_uri", post.as_str());
            }
        }
        Some(url)
    }

    /// Seal a grant for `family_id`.
    pub fn seal_grant(&self, family_id: &str, grant: &Grant) -> Vec<u8> {
        let plain = serde_json::to_vec(grant).unwrap_or_default();
        self.key.seal(family_id.as_bytes(), &plain)
    }

    /// Open a family's grant.
    pub fn open_grant(&self, family_id: &str, sealed: &[u8]) -> Option<Grant> {
        let plain = self.key.open(family_id.as_bytes(), sealed).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// How long a refresh lease is held at most (then another request may take over).
    pub fn lease_ttl(&self) -> Duration {
        self.config.timeout * 2 + Duration::from_secs(1)
    }

    /// The family ended (logout, reuse, the per-user cap): its grant moves to the revocation
    /// queue ([`revocation`]) and is revoked at the provider at once; if the provider does not
    /// take it, maintenance tries again with backoff. The grant, when there was one (for the
    /// logout URL's `id_token_hint`).
    pub async fn revoke_grant(
        &self,
        family_id: &str,
        now_ms: i64,
    ) -> Result<Option<Grant>, crate::store::StoreError> {
        // Claimed by this call for a lease: no maintenance loop tries it meanwhile.
        let claimed_until = now_ms.saturating_add(self.revocation_lease_ms());
        let queued = match self.store.queue_revocation(family_id, claimed_until).await {
            Ok(queued) => queued,
            Err(e) => {
                self.revoke_stored_now(family_id).await;
                return Err(e);
            }
        };
        let Some(queued) = queued else {
            return Ok(None);
        };
        // One that cannot be opened stays queued: maintenance drops it with a warning.
        let Some(grant) = self.open_grant(family_id, &queued.sealed) else {
            return Ok(None);
        };
        let attempt = revocation::attempt_of(&self.revoke(&grant).await);
        revocation::settle(&*self.store, &queued, 1, attempt, now_ms).await?;
        Ok(Some(grant))
    }

    /// Best effort, for a grant that no queue row covers because the store failed to keep or
    /// queue it: one attempt at the provider, now, logged (never the token). A grant the
    /// provider does not take here stays live there until it expires.
    pub async fn revoke_unqueued(&self, grant: &Grant) {
        let attempt = revocation::attempt_of(&self.revoke(grant).await);
        if attempt == revocation::Attempt::Done {
            tracing::info!("a provider grant the store could not keep was revoked directly");
        } else {
            tracing::warn!(
                ?attempt,
                "a provider grant the store could not keep was not revoked: \
                its refresh token may stay live at the provider"
            );
        }
    }

    /// The store failed to queue the family's grant for revocation (or to record the end
    /// that comes first): best effort, the grant still stored is revoked at the provider
    /// directly ([`Self::revoke_unqueued`]). It is left stored, not deleted: a delete could
    /// drop a grant a racing renewal stored meanwhile, unrevoked. Whatever queues it later
    /// (the next maintenance pass, [`Self::queue_ended_grants`], when the end was recorded;
    /// else the purge, once the family expires) revokes it again, which a provider answers as
    /// done (RFC 7009 §2.2).
    pub async fn revoke_stored_now(&self, family_id: &str) {
        let sealed = match self.store.grant(family_id).await {
            Ok(Some(sealed)) => sealed,
            // Nothing stored: queued (or revoked) already, or there was none.
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(family = %family_id, "a grant that could not be queued for \
                    revocation cannot be read either: it stays stored until its family expires");
                return;
            }
        };
        match self.open_grant(family_id, &sealed) {
            Some(grant) => {
                tracing::warn!(family = %family_id,
                    "a grant could not be queued for revocation: revoking it directly");
                self.revoke_unqueued(&grant).await;
            }
            None => tracing::warn!(family = %family_id,
                "a grant that could not be queued for revocation cannot be opened"),
        }
    }

    /// Maintenance: move to the revocation queue, due at `now_ms` (so the pass's
    /// [`Self::retry_revocations`] that follows tries them), the grants still stored for
    /// families whose end is recorded, at most [`revocation::SWEPT_PER_PASS`]
    /// ([`UpstreamStore::queue_ended_grants`]). Such a grant is one a failed store call left
    /// behind: the end could not queue it (and the direct revocation, [`Self::revoke_stored_now`],
    /// found the provider down), or a renewal that wrote it back after the end had queued the
    /// family's grant could not ask whether the family had ended. Returns how many moved.
    pub async fn queue_ended_grants(&self, now_ms: i64) -> Result<u64, crate::store::StoreError> {
        let moved = self
            .store
            .queue_ended_grants(now_ms, revocation::SWEPT_PER_PASS)
            .await?;
        if moved > 0 {
            tracing::warn!(
                moved,
                "grants of ended families were still stored (a store call failed as they \
                ended or as a renewal wrote them back): queued for revocation"
            );
        }
        Ok(moved)
    }

    /// Maintenance: try the queued revocations that are due ([`revocation::run_due`]), reading
    /// the clock with `now` (before each claim and after each provider call).
    pub async fn retry_revocations(
        &self,
        now: impl Fn() -> i64,
    ) -> Result<revocation::Pass, crate::store::StoreError> {
        revocation::run_due(
            &*self.store,
            now,
            |family_id, sealed| self.open_grant(family_id, sealed),
            |grant| async move { self.revoke(&grant).await },
            self.revocation_lease_ms(),
        )
        .await
    }

    /// How long a revocation is claimed by the instance trying it (its call's timeout and a
    /// margin, as the refresh lease).
    fn revocation_lease_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl().as_millis()).unwrap_or(i64::MAX)
    }
}

/// Check a `DPoP-Upstream` proof, made by the browser for the provider's token endpoint,
/// before it is forwarded: a valid proof (framing, `typ`, `alg`, public `jwk`, signature:
/// [`crate::dpop::parse`]) by the key `jkt` of the request's own proof, `htm` POST, `htu` the
/// provider's token endpoint (query and fragment ignored), `iat` within the window, no `ath`.
/// Its `nonce` and `jti` are the provider's to check.
pub fn check_upstream_proof(
    proof: &str,
    jkt: &str,
    token_endpoint: &Url,
    now_ms: i64,
    max_age_s: i64,
    leeway_s: i64,
) -> Result<(), crate::dpop::ProofError> {
    use crate::dpop::ProofError;
    let parsed = crate::dpop::parse(proof)?;
    let c = &parsed.claims;
    if parsed.jkt != jkt {
        return Err(ProofError::WrongKey);
    }
    if c.htm != "POST" {
        return Err(ProofError::Method);
    }
    let bare = |u: &Url| {
        let mut u = u.clone();
        u.set_query(None);
        u.set_fragment(None);
        u
    };
    let htu = Url::parse(&c.htu).map_err(|_| ProofError::Uri)?;
    if bare(&htu) != bare(token_endpoint) {
        return Err(ProofError::Uri);
    }
    let now = now_ms as f64 / 1000.0;
    if c.iat < now - max_age_s as f64 || c.iat > now + leeway_s as f64 {
        return Err(ProofError::IssuedAt);
    }
    if c.ath.is_some() {
        return Err(ProofError::AccessTokenHash);
    }
    Ok(())
}

/// Switch `state` to upstream mode when `config` names an issuer: check the `--oidc-*`
/// flags, open the upstream store (in memory, or the same SQLite file or PostgreSQL database
/// as the families),
/// discover the provider. Called once at start, before [`crate::app`] builds the router.
pub async fn start(config: &crate::Config, state: &crate::AppState) -> Result<(), String> {
    let Some(upstream) = config.oidc.resolve(&|k| std::env::var(k).ok())? else {
        return Ok(());
    };
    // Each store call bounded as the families' are (`Config::store_call_timeout`: within the
    // request, and early enough for a retry inside the lost-response window); it was the
    // stores' 10 s default here.
    let call_timeout = config.store_call_timeout();
    let store: Arc<dyn UpstreamStore> = if let Some(url) = &config.database_url {
        // The same database as the families: instances share pending logins and leases.
        Arc::new(
            crate::store::PgStore::connect_with(url, None, 4, call_timeout)
                .await
                .map_err(|e| crate::store::with_pg_target(&e, url))?,
        )
    } else if config.memory_store {
        Arc::new(crate::store::MemoryStore::new())
    } else {
        Arc::new(
            crate::store::SqliteStore::open_with(&config.data_dir, call_timeout)
                .map_err(|e| e.to_string())?,
        )
    };
    let upstream = Upstream::connect(upstream, store, state.now_ms()).await?;
    state
        .upstream
        .set(upstream)
        .map_err(|_| "upstream mode started twice".to_string())
}

/// The algorithms an ID token may be signed with (OpenID Connect Core §3.1.3.7 item 7): those
/// the provider's metadata lists in `id_token_signing_alg_values_supported` that this server
/// verifies against the provider's JWKS ([`access::ALLOWED_ALGS`]). `none` and the HS* ones
/// never, even when listed: `none` is no signature, and an HS* token is keyed with our own
/// client secret, so whoever learns the secret could mint ID tokens the provider never issued.
/// Empty when the provider offers nothing else (then [`Upstream::connect`] fails).
pub fn id_token_algs(
    advertised: &[openidconnect::core::CoreJwsSigningAlgorithm],
) -> Vec<openidconnect::core::CoreJwsSigningAlgorithm> {
    let mut algs: Vec<_> = advertised
        .iter()
        .filter(|a| access::ALLOWED_ALGS.contains(a))
        .cloned()
        .collect();
    algs.dedup();
    algs
}

/// When an ID token of one sign-in may have been issued (its `iat`, OpenID Connect Core
/// §3.1.3.7 item 10, "the acceptable range is Client specific"), on the server's clock (the
/// one that dated the sign-in's start; ms).
///
/// - Not later than `now_ms` + the leeway: a token from the future is refused (a provider
///   clock far off, or a token minted ahead to be replayed later).
/// - Not earlier than the sign-in's start − the leeway: the ID token carries the nonce made
///   when this sign-in started, so an honest provider cannot have issued it before then. A
///   pending sign-in lives [`crate::routes::upstream::PENDING_TTL_MS`] at most (the callback
///   refuses it after), so this also refuses anything older than that lifetime plus the
///   leeway; the leeway covers the provider's clock being behind ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueWindow {
    /// When the sign-in started.
    pub started_ms: i64,
    /// Now.
    pub now_ms: i64,
    /// The clock leeway (`--leeway-s`).
    pub leeway_ms: i64,
}

impl IssueWindow {
    /// Whether an ID token issued at `iat_ms` belongs to this sign-in's time. `iat` is whole
    /// seconds (the provider's time rounded down), so the start is too: with no leeway, a
    /// token issued in the second the sign-in started is not "older" than it.
    pub fn check(&self, iat_ms: i64) -> Result<(), String> {
        if iat_ms > self.now_ms.saturating_add(self.leeway_ms) {
            return Err("the ID token's iat is in the future".into());
        }
        let started_s_ms = self.started_ms.div_euclid(1000).saturating_mul(1000);
        if iat_ms < started_s_ms.saturating_sub(self.leeway_ms) {
            return Err("the ID token's iat is older than its sign-in".into());
        }
        Ok(())
    }

    /// The window with `now` moved on by the time since `since`: the ID token is minted
    /// during the code exchange, so "now" is when it is checked, not when the callback began
    /// (a slow exchange, or a provider a little ahead, would otherwise read as the future).
    fn at_check(self, since: std::time::Instant) -> Self {
        let elapsed = i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX);
        IssueWindow {
            now_ms: self.now_ms.saturating_add(elapsed),
            ..self
        }
    }
}

/// The ID-token verifier of a confidential client: `openidconnect`'s checks (signature by a
/// key of `keys` with one of `algs`, `iss`, `aud`, `exp`, `nonce`) and `iat` within `issued`.
fn id_token_verifier(
    client_id: &str,
    client_secret: &str,
    issuer: IssuerUrl,
    keys: openidconnect::core::CoreJsonWebKeySet,
    algs: Vec<openidconnect::core::CoreJwsSigningAlgorithm>,
    issued: IssueWindow,
) -> openidconnect::IdTokenVerifier<'static, CoreJsonWebKey> {
    openidconnect::IdTokenVerifier::new_confidential_client(
        ClientId::new(client_id.to_string()),
        ClientSecret::new(client_secret.to_string()),
        issuer,
        keys,
    )
    .set_allowed_algs(algs)
    .set_issue_time_verifier_fn(move |iat| issued.check(iat.timestamp_millis()))
}

/// OpenID Connect Core §3.1.3.7, items 4 and 5: an ID token with several audiences must name
/// its authorized party (`azp`), and an `azp` must be this client. `openidconnect` 4 leaves
/// this check out (commented out in its verifier), so it is made here, after its checks.
fn azp_allowed(client_id: &str, audiences: &[&str], azp: Option<&str>) -> Result<(), String> {
    match azp {
        Some(party) if party != client_id => Err("the ID token's azp is another client".into()),
        None if audiences.len() > 1 => Err("the ID token has several audiences and no azp".into()),
        _ => Ok(()),
    }
}

fn grant_from(
    response: &CoreTokenResponse,
    sub: String,
    previous_refresh: Option<String>,
    id_token: Option<String>,
    now_ms: i64,
) -> Grant {
    // Without expires_in the token is treated as living one minute.
    let lifetime_ms = response
        .expires_in()
        .map_or(60_000, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Grant {
        sub,
        refresh_token: response
            .refresh_token()
            .map(|r| r.secret().clone())
            .or(previous_refresh),
        access_token: response.access_token().secret().clone(),
        access_expires_at_ms: now_ms.saturating_add(lifetime_ms),
        access_lifetime_ms: lifetime_ms,
        id_token,
        dpop_key: None,
        dpop_bound: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azp_must_be_this_client_and_is_needed_with_several_audiences() {
        assert_eq!(azp_allowed("spa", &["spa"], None), Ok(()));
        assert_eq!(azp_allowed("spa", &["spa"], Some("spa")), Ok(()));
        assert_eq!(azp_allowed("spa", &["spa", "api"], Some("spa")), Ok(()));
        assert!(azp_allowed("spa", &["spa"], Some("other")).is_err());
        assert!(azp_allowed("spa", &["spa", "api"], Some("api")).is_err());
        assert!(azp_allowed("spa", &["spa", "api"], None).is_err());
    }

    fn grant(expires_at_ms: i64, lifetime_ms: i64) -> Grant {
        Grant {
            sub: "u".into(),
            refresh_token: Some("rt".into()),
            access_token: "at".into(),
            access_expires_at_ms: expires_at_ms,
            access_lifetime_ms: lifetime_ms,
            id_token: None,
            dpop_key: None,
            dpop_bound: false,
        }
    }

    #[test]
    fn a_cached_token_is_reused_while_half_its_life_and_two_seconds_are_left() {
        let g = grant(10_000, 10_000);
        assert!(reusable(&g, 0, None));
        assert!(reusable(&g, 5_000, None));
        assert!(!reusable(&g, 5_001, None));
        let long = grant(600_000, 600_000);
        assert!(reusable(&long, 300_000, None));
        let short = grant(3_000, 3_000);
        assert!(reusable(&short, 0, None) && !reusable(&short, 1_001, None));
    }

    #[test]
    fn a_cached_token_goes_only_to_the_dpop_key_it_was_obtained_for() {
        let mut g = grant(10_000, 10_000);
        assert!(
            !reusable(&g, 0, Some("k1")),
            "an unbound token is renewed for a key"
        );
        g.dpop_key = Some("k1".into());
        assert!(reusable(&g, 0, Some("k1")));
        assert!(
            !reusable(&g, 0, Some("k2")),
            "another key (all tabs closed, a new key)"
        );
        assert!(
            !reusable(&g, 0, None),
            "a bound token never goes to a Bearer client"
        );
    }

    /// A proof by `key` with these claims (the browser's WebCrypto key, in the tests).
    fn proof(key: &p256::ecdsa::SigningKey, claims: serde_json::Value) -> (String, String) {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let point = key.verifying_key().to_encoded_point(false);
        let (x, y) = (point.x().unwrap(), point.y().unwrap());
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": b(x), "y": b(y)});
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
        let input = format!(
            "{}.{}",
            b(&serde_json::to_vec(&header).unwrap()),
            b(&serde_json::to_vec(&claims).unwrap())
        );
        let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
        let jkt = crate::dpop::thumbprint(&(*x).into(), &(*y).into());
        (format!("{input}.{}", b(&sig.to_bytes())), jkt)
    }

    #[test]
    fn an_upstream_proof_is_forwarded_only_for_the_providers_token_endpoint_by_the_same_key() {
        use crate::dpop::ProofError;
        let endpoint = Url::parse("https://id.example.com/token").unwrap();
        let now_ms = 1_800_000_000_000;
        let now = now_ms / 1000;
        let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let claims = |htm: &str, htu: &str, iat: i64| serde_json::json!({"jti": "j1", "htm": htm, "htu": htu, "iat": iat});
        let check = |p: &str, jkt: &str| check_upstream_proof(p, jkt, &endpoint, now_ms, 60, 5);
        let (good, jkt) = proof(&key, claims("POST", "https://id.example.com/token", now));
        assert_eq!(check(&good, &jkt), Ok(()));
        let (with_query, _) = proof(
            &key,
            claims("POST", "https://id.example.com/token?x#y", now),
        );
        assert_eq!(
            check(&with_query, &jkt),
            Ok(()),
            "query and fragment ignored"
        );
        let other = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let (theirs, _) = proof(&other, claims("POST", "https://id.example.com/token", now));
        assert_eq!(check(&theirs, &jkt), Err(ProofError::WrongKey));
        for (c, why) in [
            (
                claims("GET", "https://id.example.com/token", now),
                ProofError::Method,
            ),
            (
                claims("POST", "https://id.example.com/userinfo", now),
                ProofError::Uri,
            ),
            (
                claims("POST", "https://evil.example/token", now),
                ProofError::Uri,
            ),
            (claims("POST", "/token", now), ProofError::Uri),
            (
                claims("POST", "https://id.example.com/token", now - 61),
                ProofError::IssuedAt,
            ),
            (
                claims("POST", "https://id.example.com/token", now + 6),
                ProofError::IssuedAt,
            ),
        ] {
            let (p, _) = proof(&key, c.clone());
            assert_eq!(check(&p, &jkt), Err(why), "{c}");
        }
        let mut with_ath = claims("POST", "https://id.example.com/token", now);
        with_ath["ath"] = serde_json::json!("x");
        let (p, _) = proof(&key, with_ath);
        assert_eq!(check(&p, &jkt), Err(ProofError::AccessTokenHash));
        // Another last character that still decodes (a multiple of 4 in the alphabet:
        // the last of 86 characters carries 4 bits): 'A' unless it already is one.
        let last = if good.ends_with('A') { 'E' } else { 'A' };
        let tampered = format!("{}{last}", &good[..good.len() - 1]);
        assert!(check(&tampered, &jkt).is_err(), "bad signature");
        assert!(check("not.a.proof", &jkt).is_err());
    }

    #[test]
    fn a_grant_never_shows_its_tokens_in_debug() {
        let mut g = grant(1, 1);
        g.refresh_token = Some("secret-refresh".into());
        g.access_token = "secret-access".into();
        g.id_token = Some("secret-id".into());
        let text = format!("{g:?}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[tokio::test]
    async fn a_provider_answer_over_a_mebibyte_is_not_read_whole() {
        // A provider (hostile or broken) streams 8 MiB: the server stops at 1 MiB.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
                .await;
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..128 {
                if socket.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let request = http::Request::builder()
            .uri(format!("http://{addr}/jwks"))
            .body(Vec::new())
            .unwrap();
        let got = send(reqwest::Client::new(), request).await;
        assert_eq!(got.err(), Some(HttpError::TooLarge));
    }

    /// Discovery that fails says why: it said `discovery … failed: Request failed`, with the
    /// refusal or the timeout hidden in the error's sources.
    #[tokio::test]
    async fn a_failed_discovery_names_the_refusal_or_the_timeout() {
        let connect = |issuer: String| {
            let config = config::UpstreamConfig {
                issuer,
                client_id: "client".into(),
                client_secret: config::Secret("secret".into()),
                redirect_uri: Url::parse("http://127.0.0.1/auth/upstream/callback").unwrap(),
                scopes: Vec::new(),
                allowed_return: Vec::new(),
                post_logout_uri: None,
                audience: "api".into(),
                timeout: Duration::from_millis(300),
                token_key: None,
            };
            async move {
                Upstream::connect(
                    config,
                    Arc::new(crate::store::MemoryStore::new()),
                    1_000_000,
                )
                .await
                .err()
                .expect("discovery fails")
            }
        };
        // Nothing listens.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = connect(format!("http://{closed}")).await;
        assert!(
            refused.starts_with(&format!(
                "OpenID Provider discovery at http://{closed} failed: "
            )) && refused.to_lowercase().contains("connection refused"),
            "{refused}"
        );
        // Accepts, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let timed_out = connect(format!("http://{addr}")).await;
        held.abort();
        assert!(timed_out.contains("timed out"), "{timed_out}");
    }

    mod id_tokens {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use hmac::Mac as _;
        use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm as Alg};
        use openidconnect::{IssuerUrl, Nonce};
        use p256::ecdsa::signature::Signer as _;
        use serde_json::{json, Value};

        use super::super::{id_token_algs, id_token_verifier, IssueWindow};

        const ISSUER: &str = "https://id.example.com";
        const CLIENT: &str = "client";
        const SECRET: &str = "client-secret-of-32-bytes-or-more!!";
        const NOW_MS: i64 = 1_700_000_000_000;
        const LEEWAY_MS: i64 = 5_000;
        /// The sign-in started two minutes ago.
        const STARTED_MS: i64 = NOW_MS - 120_000;

        fn b(v: &[u8]) -> String {
            URL_SAFE_NO_PAD.encode(v)
        }

        fn key() -> p256::ecdsa::SigningKey {
            p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap()
        }

        fn keys() -> CoreJsonWebKeySet {
            let point = key().verifying_key().to_encoded_point(false);
            let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
                "kid": "k1", "x": b(point.x().unwrap()), "y": b(point.y().unwrap())});
            serde_json::from_value(json!({ "keys": [jwk] })).unwrap()
        }

        fn claims(iat_ms: i64) -> Value {
            json!({"iss": ISSUER, "aud": CLIENT, "sub": "alice", "nonce": "n-1",
                "iat": iat_ms / 1000, "exp": 4_000_000_000_i64})
        }

        fn input(alg: &str, claims: &Value) -> String {
            let header = json!({"alg": alg, "typ": "JWT", "kid": "k1"});
            format!(
                "{}.{}",
                b(&serde_json::to_vec(&header).unwrap()),
                b(&serde_json::to_vec(claims).unwrap())
            )
        }

        fn es256(claims: &Value) -> String {
            let input = input("ES256", claims);
            let sig: p256::ecdsa::Signature = key().sign(input.as_bytes());
            format!("{input}.{}", b(&sig.to_bytes()))
        }

        /// Signed with the client secret, as HS256 ID tokens are (OpenID Connect Core §10.1).
        fn hs256(claims: &Value) -> String {
            let input = input("HS256", claims);
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            format!("{input}.{}", b(&mac.finalize().into_bytes()))
        }

        fn window() -> IssueWindow {
            IssueWindow {
                started_ms: STARTED_MS,
                now_ms: NOW_MS,
                leeway_ms: LEEWAY_MS,
            }
        }

        /// Verified as a sign-in does, the provider advertising `advertised`.
        fn verify(token: &str, advertised: &[Alg]) -> Result<String, String> {
            let verifier = id_token_verifier(
                CLIENT,
                SECRET,
                IssuerUrl::new(ISSUER.into()).unwrap(),
                keys(),
                id_token_algs(advertised),
                window(),
            );
            let id_token: openidconnect::core::CoreIdToken =
                serde_json::from_value(Value::String(token.into())).unwrap();
            id_token
                .claims(&verifier, &Nonce::new("n-1".into()))
                .map(|c| c.subject().as_str().to_string())
                .map_err(|e| e.to_string())
        }

        #[test]
        fn the_id_token_algorithms_are_the_advertised_ones_this_server_verifies_never_none_or_hs() {
            let advertised = [
                Alg::HmacSha256,
                Alg::RsaSsaPkcs1V15Sha256,
                Alg::None,
                Alg::EcdsaP256Sha256,
                Alg::HmacSha512,
                Alg::RsaSsaPssSha256,
                Alg::EcdsaP521Sha512,
                Alg::EdDsa,
            ];
            assert_eq!(
                id_token_algs(&advertised),
                [
                    Alg::RsaSsaPkcs1V15Sha256,
                    Alg::EcdsaP256Sha256,
                    Alg::RsaSsaPssSha256,
                    Alg::EdDsa
                ]
            );
            assert_eq!(
                id_token_algs(&[Alg::EcdsaP256Sha256]),
                [Alg::EcdsaP256Sha256],
                "only what the provider lists"
            );
            assert!(id_token_algs(&[Alg::HmacSha256, Alg::None]).is_empty());
        }

        #[test]
        fn an_id_token_keyed_with_the_client_secret_is_refused_even_when_the_provider_lists_hs256()
        {
            let advertised = [Alg::HmacSha256, Alg::EcdsaP256Sha256];
            let c = claims(NOW_MS);
            assert!(verify(&hs256(&c), &advertised).is_err(), "HS256");
            assert_eq!(verify(&es256(&c), &advertised).as_deref(), Ok("alice"));
            assert!(
                verify(&es256(&c), &[Alg::RsaSsaPkcs1V15Sha256]).is_err(),
                "an algorithm the provider does not list"
            );
        }

        #[test]
        fn an_id_token_issued_in_the_future_or_before_its_sign_in_began_is_refused() {
            let ok = [Alg::EcdsaP256Sha256];
            for (iat_ms, accepted, what) in [
                (NOW_MS, true, "now"),
                (NOW_MS + LEEWAY_MS, true, "ahead by the leeway"),
                (
                    NOW_MS + LEEWAY_MS + 1_000,
                    false,
                    "ahead by more than the leeway",
                ),
                (NOW_MS + 3_600_000, false, "an hour ahead"),
                (STARTED_MS, true, "when the sign-in began"),
                (STARTED_MS - LEEWAY_MS, true, "before it by the leeway"),
                (STARTED_MS - LEEWAY_MS - 1_000, false, "before it by more"),
                (NOW_MS - 86_400_000, false, "a day old"),
            ] {
                let got = verify(&es256(&claims(iat_ms)), &ok);
                assert_eq!(got.is_ok(), accepted, "{what}: {got:?}");
            }
        }

        #[test]
        fn the_issue_window_is_the_sign_ins_start_to_now_widened_by_the_leeway() {
            let w = window();
            assert_eq!(w.check(NOW_MS + LEEWAY_MS), Ok(()));
            assert!(w.check(NOW_MS + LEEWAY_MS + 1).is_err());
            assert_eq!(w.check(STARTED_MS - LEEWAY_MS), Ok(()));
            assert!(w.check(STARTED_MS - LEEWAY_MS - 1).is_err());
            assert!(w.check(i64::MIN).is_err());
            assert!(w.check(i64::MAX).is_err());
        }

        #[test]
        fn iat_in_the_second_the_sign_in_began_is_not_older_than_it_even_without_leeway() {
            // iat is whole seconds: a start at 10.5 s and a token issued at 10.9 s carry 10 s.
            let w = IssueWindow {
                started_ms: 10_500,
                now_ms: 11_000,
                leeway_ms: 0,
            };
            assert_eq!(w.check(10_000), Ok(()));
            assert!(w.check(9_000).is_err());
        }

        #[test]
        fn now_is_when_the_id_token_is_checked_not_when_the_callback_began() {
            let w = IssueWindow {
                started_ms: 0,
                now_ms: 10_000,
                leeway_ms: 0,
            };
            // As if the exchange had taken 2 s: a token issued 1.5 s after the callback began.
            let began = std::time::Instant::now() - std::time::Duration::from_millis(2_000);
            assert!(w.check(11_000).is_err());
            assert_eq!(w.at_check(began).check(11_000), Ok(()));
        }
    }

    #[test]
    fn provider_failures_map_to_our_answers() {
        type E = StandardErrorResponse<CoreErrorResponseType>;
        let c = |e: RequestTokenError<HttpError, E>| classify(e, token_error_code);
        for code in ["use_dpop_nonce", "invalid_dpop_proof"] {
            let e = E::new(CoreErrorResponseType::Extension(code.into()), None, None);
            assert_eq!(
                c(RequestTokenError::ServerResponse(e)),
                ProviderError::DpopProofRefused
            );
        }
        assert_eq!(
            c(RequestTokenError::Request(HttpError::Unreachable(
                String::new()
            ))),
            ProviderError::Unavailable
        );
        assert_eq!(
            c(RequestTokenError::Request(HttpError::Status(503, None))),
            ProviderError::Unavailable
        );
        let asked = revocation::RetryAfter::Seconds(30);
        assert_eq!(
            c(RequestTokenError::Request(HttpError::Status(
                429,
                Some(asked)
            ))),
            ProviderError::RetryAfter(asked)
        );
        assert!(matches!(
            c(RequestTokenError::Request(HttpError::TooLarge)),
            ProviderError::Malformed(_)
        ));
        let grant_error = E::new(CoreErrorResponseType::InvalidGrant, None, None);
        assert_eq!(
            c(RequestTokenError::ServerResponse(grant_error)),
            ProviderError::InvalidGrant
        );
        let client_error = E::new(CoreErrorResponseType::InvalidClient, None, None);
        assert!(matches!(
            c(RequestTokenError::ServerResponse(client_error)),
            ProviderError::Malformed(_)
        ));
        assert!(matches!(
            c(RequestTokenError::Other("x".into())),
            ProviderError::Malformed(_)
        ));
    }
}
