//! Who may see and change what: the token or read-only token (bearer or basic auth), the
//! role it gives, and the checks on every change (POST, `X-Jetq-Request`, same origin).

use super::*;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Every page and every change.
    Admin,
    /// Every page, no change.
    ReadOnly,
}

impl Role {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

/// Who made a request, as the guard identified them; handlers log it with every change.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Caller {
    /// The basic-auth user name (`bearer` for a bearer token), if a token was given.
    pub(super) user: Option<String>,
    /// The role.
    pub(super) role: Role,
    /// The remote address.
    pub(super) remote: String,
}

impl Caller {
    pub(super) fn can_act(&self) -> bool {
        self.role == Role::Admin
    }

    /// How the logs and the header name the caller: `ops (admin token) from 10.0.0.7:51234`,
    /// or the remote address alone without a token.
    pub(super) fn who(&self) -> String {
        match &self.user {
            Some(user) => format!("{user} ({} token) from {}", self.role.as_str(), self.remote),
            None => format!("{} (no token, {})", self.remote, self.role.as_str()),
        }
    }
}

/// Authentication for everything, the role, and the extra checks on changes.
pub(super) async fn guard(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.to_string());
    let config = &state.config;
    let caller = if config.token.is_none() && config.read_only_token.is_none() {
        Caller {
            user: None,
            role: if config.read_only {
                Role::ReadOnly
            } else {
                Role::Admin
            },
            remote,
        }
    } else {
        let headers = request.headers();
        let admin = config
            .token
            .as_deref()
            .and_then(|token| authorized(headers, token));
        let viewer = config
            .read_only_token
            .as_deref()
            .and_then(|token| authorized(headers, token));
        match (admin, viewer) {
            (Some(user), _) => Caller {
                user: Some(user),
                role: if config.read_only {
                    Role::ReadOnly
                } else {
                    Role::Admin
                },
                remote,
            },
            (None, Some(user)) => Caller {
                user: Some(user),
                role: Role::ReadOnly,
                remote,
            },
            (None, None) => {
                let mut response =
                    (StatusCode::UNAUTHORIZED, Html(page::unauthorized())).into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"jetq dashboard\", charset=\"UTF-8\""),
                );
                return response;
            }
        }
    };
    if request.method() == Method::POST {
        let path = request.uri().path().to_owned();
        let refuse = |message: &str| {
            tracing::info!(by = %caller.who(), path = %path, reason = message, "dashboard: change refused");
            error_response(StatusCode::FORBIDDEN, message.to_owned())
        };
        if !caller.can_act() {
            return refuse(if config.read_only {
                "the dashboard is read-only (started with --read-only)"
            } else {
                "this token is read-only (--read-only-token): it can view every page but change nothing"
            });
        }
        let headers = request.headers();
        if headers.get("x-jetq-request").map(HeaderValue::as_bytes) != Some(b"1") {
            return refuse(
                "changes need the header X-Jetq-Request: 1 (cross-site requests are refused)",
            );
        }
        if let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
        {
            let origin = origin.to_str().unwrap_or_default();
            let host = host.to_str().unwrap_or_default();
            let same = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host);
            if !same {
                return refuse("changes are only accepted from the dashboard's own pages");
            }
        }
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Checks `Authorization: Bearer <token>` or `Basic <base64(user:token)>`, in constant time;
/// the user name (`bearer` for a bearer token) if it matches.
pub(super) fn authorized(headers: &HeaderMap, token: &str) -> Option<String> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let value = value.trim();
    if let Some(bearer) = strip_scheme(value, "bearer") {
        return constant_time_eq(bearer.trim().as_bytes(), token.as_bytes())
            .then(|| "bearer".to_owned());
    }
    if let Some(basic) = strip_scheme(value, "basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        if !constant_time_eq(&decoded[colon + 1..], token.as_bytes()) {
            return None;
        }
        let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
        return Some(if user.is_empty() {
            "(no user name)".to_owned()
        } else {
            user
        });
    }
    None
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// True if `given` equals `token`, in time that depends on the token's length only: `given` is
/// cut or padded to it and compared with `subtle`, its length compared apart, so neither how
/// many bytes matched nor how long the token is shows in the response time.
fn constant_time_eq(given: &[u8], token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let mut padded = given.to_vec();
    padded.resize(token.len(), 0);
    let same_length = (given.len() as u64).ct_eq(&(token.len() as u64));
    (padded.as_slice().ct_eq(token) & same_length).into()
}
