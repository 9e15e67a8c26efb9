//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes, and the
//! access table derived from it.
//!
//! Each operation declares the one scope it needs as its security requirement and its audit
//! action as its operation id. The authentication layer reads both from this document, so the
//! published document and what the server enforces cannot disagree, and a route added without
//! a security requirement is refused to everyone.

use std::collections::HashMap;

use axum::http::Method;
use ck_api_types::{PROBLEM_CONTENT_TYPE, Problem};
use ck_domain::Scope;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

/// The security scheme's name in the document.
pub(crate) const TOKEN_SCHEME: &str = "token";

/// The mount point of the API.
pub(crate) const API_PREFIX: &str = "/api/v1";

/// What a route needs and how the audit trail names it.
#[derive(Debug, Clone)]
pub(crate) struct RouteAccess {
    /// The scope it needs; `None`: any valid token.
    pub(crate) scope: Option<Scope>,
    /// The operation id: the audit action.
    pub(crate) action: String,
    /// Only for tokens without a restriction (see [`SERVER_WIDE`]).
    pub(crate) server_wide: bool,
}

/// Operations on state that every team shares: a token restricted to some certificates (a
/// team's admin) may not call them, whatever its scopes. Issuers and their ACME accounts serve
/// every team; the audit trail and the notification queue name every team's certificates and
/// tokens. What a restricted admin does reach: tokens within its own reach (scopes a subset,
/// restriction at least as narrow), agents carrying its labels, and its certificates.
pub(crate) const SERVER_WIDE: [&str; 7] = [
    "issuer.create",
    "issuer.account_rollover",
    "issuer.account_deactivate",
    "audit.list",
    "notification.list",
    "notification.get",
    "notification.requeue",
];

/// Access rules by method and path template (without the `/api/v1` prefix).
#[derive(Debug, Default)]
pub(crate) struct AccessTable(HashMap<(Method, String), RouteAccess>);

impl AccessTable {
    /// The methods `path` (a route template) has, for `405 Method Not Allowed`'s `Allow`.
    pub(crate) fn methods(&self, path: &str) -> Vec<Method> {
        let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
        let mut methods: Vec<Method> = self
            .0
            .keys()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .collect();
        methods.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods
    }

    pub(crate) fn get(&self, method: &Method, path: &str) -> Option<&RouteAccess> {
        let path = path.strip_prefix(API_PREFIX).unwrap_or(path);
        self.0.get(&(method.clone(), path.to_owned()))
    }

    /// Reads every operation's scope and id. An operation with an unknown scope or without a
    /// security requirement gets no entry, so the layer refuses it.
    pub(crate) fn from_openapi(doc: &OpenApi) -> Self {
        let mut table = HashMap::new();
        for (path, item) in &doc.paths.paths {
            for (method, operation) in operations(item) {
                let Some(requirements) = &operation.security else {
                    continue;
                };
                let Ok(value) = serde_json::to_value(requirements) else {
                    continue;
                };
                let scopes: Vec<String> = value
                    .get(0)
                    .and_then(|r| r.get(TOKEN_SCHEME))
                    .and_then(|s| serde_json::from_value(s.clone()).ok())
                    .unwrap_or_default();
                let scope = match scopes.as_slice() {
                    [] => None,
                    [one] => match one.parse() {
                        Ok(scope) => Some(scope),
                        Err(_) => continue,
                    },
                    _ => continue,
                };
                let action = operation.operation_id.clone().unwrap_or_default();
                let path = path.strip_prefix(API_PREFIX).unwrap_or(path).to_owned();
                let server_wide = SERVER_WIDE.contains(&action.as_str());
                table.insert(
                    (method, path),
                    RouteAccess {
                        scope,
                        action,
                        server_wide,
                    },
                );
            }
        }
        Self(table)
    }
}

fn operations(item: &utoipa::openapi::PathItem) -> Vec<(Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::POST, &item.post),
        (Method::PUT, &item.put),
        (Method::PATCH, &item.patch),
        (Method::DELETE, &item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
    .collect()
}

/// The errors every API operation may answer, as problem documents.
const ERRORS: [(&str, &str); 11] = [
    ("400", "The request is malformed; the detail says what to fix."),
    ("401", "No token, or an unknown, revoked or expired one."),
    (
        "403",
        "The token lacks the scope, or its restriction excludes the resource.",
    ),
    (
        "404",
        "No such resource (or one the token's restriction does not reach).",
    ),
    ("409", "The request conflicts with the current state."),
    ("413", "The body is too large."),
    ("415", "The body is not JSON."),
    ("422", "The JSON does not match the expected shape."),
    ("429", "Too many requests or failed authentications; see Retry-After."),
    ("502", "The CA refused or failed; the detail carries its answer."),
    ("503", "The server cannot complete the request now; retry later."),
];

/// Adds what the handlers' attributes leave out: the title, the token scheme, the common
/// error answers of every operation, and the `/api/v1` prefix.
pub(crate) fn finish(api: OpenApi) -> OpenApi {
    let mut api = OpenApi::builder()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("certkeeper API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Certificate lifecycle management. Send `Authorization: Bearer <token>`; each operation \
                     names the one token scope it needs (an empty list: any valid token). Errors are RFC 9457 \
                     problem documents.",
                ))
                .build(),
        )
        .build()
        .nest(API_PREFIX, api);
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(TOKEN_SCHEME, SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    for item in api.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            if operation
                .operation_id
                .as_deref()
                .is_some_and(|id| SERVER_WIDE.contains(&id))
            {
                let note = "Server-wide: only a token without a restriction (labels or name suffixes) may call it.";
                operation.description = Some(match operation.description.take() {
                    Some(text) => format!("{text}\n\n{note}"),
                    None => note.to_owned(),
                });
            }
            for (status, description) in ERRORS {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                PROBLEM_CONTENT_TYPE,
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name(Problem::name())))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
            }
        }
    }
    api
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_one_access_rule_and_the_common_errors() {
        let doc = crate::openapi();
        let table = AccessTable::from_openapi(&doc);
        let mut operations_seen = 0;
        for (path, item) in &doc.paths.paths {
            assert!(path.starts_with(API_PREFIX), "{path}");
            for (method, operation) in operations(item) {
                operations_seen += 1;
                let rule = table
                    .get(&method, path)
                    .unwrap_or_else(|| panic!("{method} {path} has no security requirement"));
                assert_eq!(
                    Some(rule.action.as_str()),
                    operation.operation_id.as_deref(),
                    "{method} {path}"
                );
                assert!(
                    rule.action.contains('.'),
                    "{method} {path}: operation id '{}'",
                    rule.action
                );
                for (status, _) in ERRORS {
                    assert!(
                        operation.responses.responses.contains_key(status),
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert_eq!(table.0.len(), operations_seen);
        assert!(operations_seen >= 30, "{operations_seen}");
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["components"]["securitySchemes"]["token"]["scheme"], "bearer");
    }
}
